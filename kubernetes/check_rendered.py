"""Checks of rendered kustomize output that schemas cannot make; used by validate.sh.

Subcommands (each exits 1 with one line per problem):

  split RENDERED OUTDIR [--external-secret NAME ...]
      Every document has apiVersion, kind and metadata.name, namespaced ones a
      namespace, no two share kind/namespace/name. Writes OUTDIR/core.yaml (the
      built-in kinds, for kubernetes-validate) and OUTDIR/rules.yaml (the spec
      of the PrometheusRule, for promtool). Prometheus Operator objects
      (PodMonitor, ServiceMonitor, PrometheusRule) and Strimzi objects
      (KafkaTopic, KafkaUser) have no schema in kubernetes-validate: their
      structure is checked here. Also checks
      references: ConfigMaps, Secrets, PVCs and ServiceAccounts used by pod
      templates exist (or are named with --external-secret, or are Strimzi's:
      a KafkaUser's Secret, a cluster's <cluster>-cluster-ca-cert), and Service,
      PodDisruptionBudget, NetworkPolicy and PodMonitor selectors and named
      ports match a pod template.

  dashboard JSON OUTDIR
      The Grafana dashboard: valid JSON, a "datasource" variable of type
      datasource (prometheus) and every panel, query and variable on
      ${datasource}; no __inputs (import-only ${DS_...} placeholders, which a
      provisioned dashboard cannot fill: the kube-prometheus-stack sidecar
      loads it as it is); unique panel ids; writes OUTDIR/dashboard-rules.yaml
      with every panel query as a recording rule, so promtool checks their PromQL.

  placeholders RENDERED
      Values a real deployment must replace (for the prod overlay): any string
      holding "placeholder", host names under the reserved example domains
      (RFC 2606: example, example.com/.net/.org, .invalid, .test) and
      documentation address blocks (RFC 5737, RFC 3849) in NetworkPolicy
      ipBlocks. One line each, exit 1.

  metrics RULES...
      Every ftp_pooler_* series named in the expressions of the Prometheus
      rule files (the alert rules, the dashboard's queries as written by
      `dashboard`) is one that ftp_pooler.metrics.Metrics exposes (catches
      renamed metrics).

  config RENDERED [--connections-from RENDERED]
      Runs `ftp-pooler check-config` on the rendered ConfigMap and Secret with
      the StatefulSet's literal environment (so FTP_POOLER__* overrides are
      checked too), then compares the result with the StatefulSet: api.port is
      the probed containerPort, terminationGracePeriodSeconds covers
      worker.drain_seconds plus the result acknowledgement wait, and the
      worker name and static membership come from the pod name. And Kafka
      access (check_kafka_access): the NetworkPolicy names the bootstrap
      port, the Kafka TLS files are keys of mounted Secrets, and with
      Strimzi the topics exist and the worker's KafkaUser grants exactly
      the ACLs its settings need.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
    "PriorityClass",
}
BUILTIN_GROUPS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
    "autoscaling/v2",
}
OPERATOR_GROUP = "monitoring.coreos.com/"
STRIMZI_GROUP = "kafka.strimzi.io/"
# Strimzi's simple-authorization ACL vocabulary (KafkaUser spec.authorization.acls).
STRIMZI_ACL_RESOURCES = {"topic", "group", "cluster", "transactionalId"}
STRIMZI_ACL_OPERATIONS = {
    "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
    "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All",
}  # fmt: skip
# What a KafkaUser's Secret holds (Strimzi User Operator, authentication type tls).
STRIMZI_USER_KEYS = {"user.crt", "user.key", "user.p12", "user.password", "ca.crt"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# Metrics the workers expose beyond what their families are named (counters: _total,
# histograms: _bucket/_sum/_count, summaries: _sum/_count); see metric_names().
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
}


class Problems(list[str]):
    def exit(self, what: str) -> None:
        for problem in self:
            print(f"  {what}: {problem}", file=sys.stderr)
        if self:
            sys.exit(1)


def load(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def ident(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, doc["spec"]["template"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def check_operator_object(doc: dict[str, Any], problems: Problems) -> None:
    spec = doc.get("spec")
    name = ident(doc)
    if not isinstance(spec, dict):
        problems.append(f"{name}: spec must be a mapping")
        return
    kind = doc["kind"]
    if kind == "PrometheusRule":
        groups = spec.get("groups")
        if not isinstance(groups, list) or not groups:
            problems.append(f"{name}: spec.groups must be a non-empty list")
            return
        for group in groups:
            if not isinstance(group, dict) or not group.get("name") or not group.get("rules"):
                problems.append(f"{name}: every group needs a name and rules")
                continue
            for rule in group["rules"]:
                if not isinstance(rule, dict) or not (rule.get("alert") or rule.get("record")):
                    problems.append(f"{name}: every rule needs alert or record")
                    continue
                if not isinstance(rule.get("expr"), str) or not rule["expr"].strip():
                    problems.append(f"{name}: {rule.get('alert') or rule.get('record')}: no expr")
                if rule.get("alert"):
                    annotations = rule.get("annotations") or {}
                    for key in ("summary", "description", "runbook_url"):
                        if not annotations.get(key):
                            problems.append(f"{name}: {rule['alert']}: no {key} annotation")
                    anchor = "#" + rule["alert"].lower()
                    if not str(annotations.get("runbook_url", "")).endswith(anchor):
                        problems.append(
                            f"{name}: {rule['alert']}: runbook_url must end in {anchor}"
                        )
    elif kind in ("PodMonitor", "ServiceMonitor"):
        key = "podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"
        if not isinstance(spec.get("selector"), dict):
            problems.append(f"{name}: spec.selector must be a mapping")
        endpoints = spec.get(key)
        if not isinstance(endpoints, list) or not endpoints:
            problems.append(f"{name}: spec.{key} must be a non-empty list")
        elif not all(isinstance(e, dict) and e.get("port") for e in endpoints):
            problems.append(f"{name}: every entry of spec.{key} needs a named port")
    else:
        problems.append(f"{name}: unknown Prometheus Operator kind, no check for it")


def check_strimzi_object(doc: dict[str, Any], problems: Problems) -> None:
    """KafkaTopic and KafkaUser (Strimzi v1beta2), which have no schema offline."""
    name, spec, kind = ident(doc), doc.get("spec"), doc["kind"]
    if not (doc["metadata"].get("labels") or {}).get("strimzi.io/cluster"):
        problems.append(f"{name}: no strimzi.io/cluster label (the cluster that manages it)")
    if not isinstance(spec, dict):
        problems.append(f"{name}: spec must be a mapping")
        return
    if kind == "KafkaTopic":
        for key in ("partitions", "replicas"):
            if not isinstance(spec.get(key), int) or spec[key] < 1:
                problems.append(f"{name}: spec.{key} must be a positive integer")
        if not isinstance(spec.get("config", {}), dict):
            problems.append(f"{name}: spec.config must be a mapping")
    elif kind == "KafkaUser":
        auth = (spec.get("authentication") or {}).get("type")
        if auth not in ("tls", "tls-external", "scram-sha-512"):
            problems.append(f"{name}: spec.authentication.type {auth!r} is not a Strimzi type")
        for index, acl in enumerate(strimzi_acls(doc, problems)):
            resource = acl.get("resource") or {}
            if resource.get("type") not in STRIMZI_ACL_RESOURCES:
                problems.append(f"{name}: acls[{index}]: resource.type {resource.get('type')!r}")
            elif resource["type"] != "cluster" and not resource.get("name"):
                problems.append(f"{name}: acls[{index}]: a {resource['type']} ACL needs a name")
            operations = acl.get("operations")
            if not isinstance(operations, list) or not operations:
                problems.append(f"{name}: acls[{index}]: operations must be a non-empty list")
            elif unknown := set(operations) - STRIMZI_ACL_OPERATIONS:
                problems.append(f"{name}: acls[{index}]: unknown operations {sorted(unknown)}")
    else:
        problems.append(f"{name}: unknown Strimzi kind, no check for it")


def strimzi_acls(user: dict[str, Any], problems: Problems) -> list[dict[str, Any]]:
    authorization = (user.get("spec") or {}).get("authorization")
    if authorization is None:
        return []
    simple = isinstance(authorization, dict) and authorization.get("type") == "simple"
    acls = authorization.get("acls") if simple else None
    if not isinstance(acls, list):
        problems.append(f"{ident(user)}: spec.authorization: expected type simple and acls")
        return []
    return [acl for acl in acls if isinstance(acl, dict)]


def check_references(docs: list[dict[str, Any]], external: set[str], problems: Problems) -> None:
    have: dict[str, set[str]] = {}
    for doc in docs:
        have.setdefault(doc["kind"], set()).add(doc["metadata"]["name"])
    have.setdefault("Secret", set()).update(external)
    # Strimzi's User Operator writes each KafkaUser's credentials to a Secret of its name;
    # the Cluster Operator keeps each cluster's CA certificate in <cluster>-cluster-ca-cert
    # (in the cluster's namespace: components/strimzi says how it gets copied here).
    have["Secret"].update(have.get("KafkaUser", set()))
    for doc in docs:
        if doc["apiVersion"].startswith(STRIMZI_GROUP):
            cluster = (doc["metadata"].get("labels") or {}).get("strimzi.io/cluster")
            if cluster:
                have["Secret"].add(f"{cluster}-cluster-ca-cert")
    templates = list(pod_templates(docs))
    for owner, template in templates:
        spec = template["spec"]
        where = ident(owner)
        sa = spec.get("serviceAccountName")
        if sa and sa not in have.get("ServiceAccount", set()):
            problems.append(f"{where}: ServiceAccount {sa} is not in the output")
        refs: list[tuple[str, str]] = []
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                refs.append(("ConfigMap", volume["configMap"]["name"]))
            if "secret" in volume:
                refs.append(("Secret", volume["secret"]["secretName"]))
            if "persistentVolumeClaim" in volume:
                refs.append(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                if "secretKeyRef" in source:
                    refs.append(("Secret", source["secretKeyRef"]["name"]))
                if "configMapKeyRef" in source:
                    refs.append(("ConfigMap", source["configMapKeyRef"]["name"]))
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"] for v in spec.get("volumes", [])}
            for missing in sorted(mounts - volumes):
                problems.append(f"{where}: volumeMount {missing} has no volume")
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = (container.get(probe) or {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problems.append(f"{where}: {probe} uses port {port}, not a named port")
        for kind, name in refs:
            if name not in have.get(kind, set()):
                problems.append(f"{where}: {kind} {name} is not in the output")

    def pods_for(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [t for _, t in templates if matches(selector, t["metadata"].get("labels", {}))]

    def port_names(pods: list[dict[str, Any]]) -> set[str]:
        return {
            p.get("name") for t in pods for c in t["spec"]["containers"] for p in c.get("ports", [])
        }

    for doc in docs:
        kind, spec, where = doc["kind"], doc.get("spec") or {}, ident(doc)
        if kind == "Service":
            pods = pods_for(spec.get("selector", {}))
            if not pods:
                problems.append(f"{where}: selector matches no pod template")
            for port in spec.get("ports", []):
                target = port.get("targetPort")
                if isinstance(target, str) and target not in port_names(pods):
                    problems.append(f"{where}: targetPort {target} is no named container port")
        elif kind in ("PodDisruptionBudget", "PodMonitor"):
            selector = spec.get("selector", {}).get("matchLabels", {})
            pods = pods_for(selector)
            if not pods:
                problems.append(f"{where}: selector matches no pod template")
            for endpoint in spec.get("podMetricsEndpoints", []):
                if endpoint.get("port") not in port_names(pods):
                    problems.append(
                        f"{where}: port {endpoint.get('port')} is no named container port"
                    )
        elif kind == "NetworkPolicy":
            if not pods_for(spec.get("podSelector", {}).get("matchLabels", {})):
                problems.append(f"{where}: podSelector matches no pod template")
        elif kind == "StatefulSet":
            if spec.get("serviceName") not in have.get("Service", set()):
                problems.append(f"{where}: serviceName {spec.get('serviceName')} is not a Service")
            if spec.get("volumeClaimTemplates"):
                problems.append(
                    f"{where}: volumeClaimTemplates give each pod its own disk;"
                    " the data volume must be one shared ReadWriteMany claim"
                )


def cmd_split(args: argparse.Namespace) -> None:
    problems = Problems()
    docs = load(args.rendered)
    out = Path(args.outdir)
    core: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    seen: set[str] = set()
    for doc in docs:
        meta = doc.get("metadata")
        if (
            not isinstance(doc.get("apiVersion"), str)
            or not isinstance(doc.get("kind"), str)
            or not isinstance(meta, dict)
            or not meta.get("name")
        ):
            problems.append(
                f"a document without apiVersion, kind or metadata.name: {str(doc)[:80]}"
            )
            continue
        if doc["kind"] not in CLUSTER_SCOPED and not meta.get("namespace"):
            problems.append(f"{ident(doc)}: no namespace")
        key = f"{doc['apiVersion'].split('/')[0]}:{ident(doc)}"
        if key in seen:
            problems.append(f"{ident(doc)}: given twice")
        seen.add(key)
        if doc["apiVersion"].startswith(OPERATOR_GROUP):
            check_operator_object(doc, problems)
            if doc["kind"] == "PrometheusRule":
                rules.extend(doc["spec"].get("groups", []))
        elif doc["apiVersion"].startswith(STRIMZI_GROUP):
            check_strimzi_object(doc, problems)
        elif doc["apiVersion"] in BUILTIN_GROUPS:
            core.append(doc)
        else:
            problems.append(
                f"{ident(doc)}: apiVersion {doc['apiVersion']} is neither built in"
                " nor Prometheus Operator nor Strimzi: nothing would validate it"
            )
    check_references(
        [d for d in docs if isinstance(d.get("metadata"), dict)],
        set(args.external_secret),
        problems,
    )
    problems.exit(args.rendered)
    with open(out / "core.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    if rules:
        with open(out / "rules.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump({"groups": rules}, f, sort_keys=False)
    kinds = sorted({d["kind"] for d in docs})
    print(
        f"  {len(docs)} objects ({', '.join(kinds)}); {len(core)} for schema validation,"
        f" {len(docs) - len(core)} operator objects (Prometheus, Strimzi) checked structurally"
    )


def cmd_dashboard(args: argparse.Namespace) -> None:
    problems = Problems()
    try:
        with open(args.json, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"  {args.json}: {exc}", file=sys.stderr)
        sys.exit(1)
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    if "__inputs" in dashboard or "${DS_" in json.dumps(dashboard):
        problems.append("__inputs or ${DS_...}: only an import fills them, not provisioning")
    variables = dashboard.get("templating", {}).get("list", [])
    if not any(
        v.get("name") == "datasource"
        and v.get("type") == "datasource"
        and v.get("query") == "prometheus"
        for v in variables
    ):
        problems.append("no templating variable 'datasource' of type datasource (prometheus)")
    for key in ("uid", "title", "schemaVersion", "panels"):
        if not dashboard.get(key):
            problems.append(f"no {key}")
    ids: set[int] = set()
    recording: list[dict[str, str]] = []
    for panel in dashboard.get("panels", []):
        pid = panel.get("id")
        if pid in ids:
            problems.append(f"panel id {pid} used twice")
        ids.add(pid)
        if "gridPos" not in panel:
            problems.append(f"panel {pid}: no gridPos")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != datasource:
            problems.append(
                f"panel {pid} ({panel.get('title')}): datasource is not ${{datasource}}"
            )
        if not panel.get("targets"):
            problems.append(f"panel {pid} ({panel.get('title')}): no queries")
        for target in panel.get("targets", []):
            if target.get("datasource", datasource) != datasource:
                problems.append(
                    f"panel {pid}: query {target.get('refId')}: datasource is not ${{datasource}}"
                )
            expr = target.get("expr", "")
            concrete = (
                expr.replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("$namespace", "ftp-pooler")
                .replace("$pod", ".*")
                .replace("$connection", ".*")
            )
            if "$" in concrete:
                problems.append(f"panel {pid}: unknown variable in {expr}")
            recording.append(
                {"record": f"dashboard:panel{pid}:{target.get('refId', 'x')}", "expr": concrete}
            )
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            if var.get("datasource") != datasource:
                problems.append(f"variable {var.get('name')}: datasource is not ${{datasource}}")
            query = var.get("query", {})
            query = query.get("query", "") if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            if not match:
                problems.append(f"variable {var.get('name')}: not label_values(selector, label)")
            else:
                recording.append(
                    {
                        "record": f"dashboard:var:{var.get('name')}",
                        "expr": match.group(1).replace("$namespace", "ftp-pooler"),
                    }
                )
    problems.exit(args.json)
    with open(Path(args.outdir) / "dashboard-rules.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}, f, sort_keys=False)
    print(f"  {len(ids)} panels, {len(recording)} queries")


RESERVED_DOMAINS = ("example", "example.com", "example.net", "example.org", "invalid", "test")
"""RFC 2606: names that never resolve on the Internet, used as placeholders."""
DOCUMENTATION_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _strings(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _strings(inner, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def _reserved_host(value: str) -> bool:
    """Whether ``value`` names a host under a RESERVED_DOMAINS domain (in a URL, an
    image reference, a ``host:port`` list...)."""
    for token in re.split(r"[\s,/@=:\"']+", value.lower()):
        if "." in token and any(
            token == domain or token.endswith("." + domain) for domain in RESERVED_DOMAINS
        ):
            return True
    return False


def find_placeholders(docs: list[dict[str, Any]]) -> list[str]:
    """``kind/name path: value`` for each value a real deployment must replace."""
    import ipaddress

    nets = [ipaddress.ip_network(n) for n in DOCUMENTATION_NETS]
    found: list[str] = []
    for doc in docs:
        where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        for path, text in _strings(doc):
            if path.startswith(".metadata.annotations"):
                continue
            lines = text.splitlines()
            for number, line in enumerate(lines, start=1):
                # A file in a ConfigMap or Secret: its comments may say PLACEHOLDER.
                value = re.split(r"(?:^|\s)[#;]", line, maxsplit=1)[0].strip()
                if "placeholder" in value.lower() or _reserved_host(value):
                    at = f" line {number}" if len(lines) > 1 else ""
                    found.append(f"{where} {path}{at}: {value}")
            if path.endswith(".ipBlock.cidr"):
                try:
                    net = ipaddress.ip_network(text, strict=False)
                except ValueError:
                    continue
                if any(
                    net.version == doc_net.version and net.subnet_of(doc_net) for doc_net in nets
                ):
                    found.append(f"{where} {path}: {text} (a documentation range)")
    return found


def cmd_placeholders(args: argparse.Namespace) -> None:
    problems = Problems(
        f"PLACEHOLDER still set: {found}" for found in find_placeholders(load(args.rendered))
    )
    problems.exit(args.rendered)
    print("  no placeholders")


def metric_names() -> set[str]:
    """Every series name the worker can expose, from its registry's metric families."""
    from ftp_pooler.metrics import Metrics

    metrics = Metrics()
    metrics.watch_pool(dict)  # no connections: the families without samples
    metrics.watch_scheduling(dict, dict)
    names: set[str] = set()
    for family in metrics.registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def cmd_metrics(args: argparse.Namespace) -> None:
    problems = Problems()
    known = metric_names()
    used: set[str] = set()
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            exprs = [
                rule["expr"] for group in yaml.safe_load(f)["groups"] for rule in group["rules"]
            ]
        names = {n for e in exprs for n in re.findall(r"\b(ftp_pooler_\w+|kube_\w+)\b", e)}
        used |= names
        for name in sorted(names):
            if not name.startswith("kube_") and name not in known:
                problems.append(f"{path}: {name} is not a metric of ftp_pooler.metrics")
    problems.exit("metrics")
    print(
        f"  {len(used)} metric names used, all exposed by ftp_pooler.metrics"
        " (kube_* ones come from kube-state-metrics)"
    )


def secret_files(docs: list[dict[str, Any]], name: str) -> dict[str, bytes] | None:
    for doc in docs:
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == name:
            files = {k: base64.b64decode(v) for k, v in (doc.get("data") or {}).items()}
            files.update({k: v.encode() for k, v in (doc.get("stringData") or {}).items()})
            return files
    return None


def cmd_config(args: argparse.Namespace) -> None:
    problems = Problems()
    docs = load(args.rendered)
    (sts,) = [
        d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "ftp-pooler"
    ]
    pod = sts["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "ftp-pooler"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[var["name"]] = f"{sts['metadata']['name']}-0"
    config_path, connections_path = env.get("FTP_POOLER_CONFIG"), env.get("FTP_POOLER_CONNECTIONS")
    if not config_path or not connections_path:
        problems.append("FTP_POOLER_CONFIG and FTP_POOLER_CONNECTIONS must be set")
        problems.exit(args.rendered)
    assert config_path and connections_path
    # The ConfigMap behind the config file's mount.
    mount = mounts.get(config_path)
    config_text = None
    if mount is None or "configMap" not in volumes.get(mount["name"], {}):
        problems.append(f"{config_path} is not mounted from a ConfigMap")
    else:
        cm_name = volumes[mount["name"]]["configMap"]["name"]
        key = mount.get("subPath", Path(config_path).name)
        for doc in docs:
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == cm_name:
                config_text = (doc.get("data") or {}).get(key)
        if config_text is None:
            problems.append(f"ConfigMap {cm_name} has no key {key}")
    # The Secret behind the connections file's directory.
    secret_dir = str(Path(connections_path).parent)
    mount = mounts.get(secret_dir)
    files = None
    if mount is None or "secret" not in volumes.get(mount["name"], {}):
        problems.append(f"{secret_dir} is not mounted from a Secret")
    else:
        name = volumes[mount["name"]]["secret"]["secretName"]
        files = secret_files(docs, name)
        if files is None and args.connections_from:
            files = secret_files(load(args.connections_from), name)
            print(
                f"  (Secret {name} is not in this output: using the one of {args.connections_from})"
            )
        if files is None:
            problems.append(f"Secret {name} not found")
        elif Path(connections_path).name not in files:
            problems.append(f"Secret {name} has no key {Path(connections_path).name}")
    problems.exit(args.rendered)
    assert config_text is not None and files is not None

    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp, "config.yaml")
        config_file.write_text(config_text, encoding="utf-8")
        secret = Path(tmp, "secret")
        secret.mkdir()
        for key, value in files.items():
            (secret / key).write_bytes(value)
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, **env}
        # The files live here, not at the pod's paths: give them on the command line.
        run_env.pop("FTP_POOLER_CONFIG")
        run_env.pop("FTP_POOLER_CONNECTIONS")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ftp_pooler.cli",
                "check-config",
                "--config",
                str(config_file),
                "--connections",
                str(secret / Path(connections_path).name),
            ],
            env=run_env,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        print(f"  ftp-pooler check-config failed:\n{result.stderr}", file=sys.stderr)
        sys.exit(1)
    report = json.loads(result.stdout)
    settings = report["settings"]
    probed = {
        (container.get(p) or {}).get("httpGet", {}).get("port")
        for p in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for port in probed:
        number = ports.get(port, port)
        if number != settings["api"]["port"]:
            problems.append(
                f"a probe uses port {port} ({number}), api.port is {settings['api']['port']}"
            )
    # After the drain, results of finished transfers may take this long to be acknowledged.
    from ftp_pooler.service.worker import ACK_WAIT_SECONDS

    grace = pod.get("terminationGracePeriodSeconds", 30)
    needed = settings["worker"]["drain_seconds"] + ACK_WAIT_SECONDS
    if grace <= needed:
        problems.append(
            f"terminationGracePeriodSeconds {grace} does not exceed worker.drain_seconds"
            f" + {ACK_WAIT_SECONDS:g} s of acknowledgement wait ({needed:g} s)"
        )
    if settings["worker"]["name"] != env.get("POD_NAME"):
        problems.append(f"worker.name is {settings['worker']['name']!r}, not the pod name")
    if not settings["kafka"]["static_membership_from_pod_name"]:
        problems.append("kafka.static_membership_from_pod_name is off")
    check_kafka_access(settings["kafka"], docs, container, volumes, problems)
    problems.exit(args.rendered)
    overrides = sorted(k for k in env if k.startswith("FTP_POOLER__"))
    print(
        f"  check-config passed ({len(report['connections'])} connections,"
        f" overrides: {', '.join(overrides) or 'none'}); api.port {settings['api']['port']},"
        f" grace {grace} s > drain {settings['worker']['drain_seconds']:g} s + ack wait"
    )


def check_kafka_access(
    kafka: dict[str, Any],
    docs: list[dict[str, Any]],
    container: dict[str, Any],
    volumes: dict[str, dict[str, Any]],
    problems: Problems,
) -> None:
    """The worker can reach and use Kafka as rendered.

    - the NetworkPolicy of the worker pods lets it out to every bootstrap port;
    - each Kafka TLS file setting names a key of a mounted Secret;
    - with Strimzi: the worker's topics are KafkaTopics of the output, and the
      KafkaUser whose Secret the worker mounts grants exactly what the worker
      needs (Read on the input topic and the group, Write on the result
      topics, IdempotentWrite on the cluster; Describe on those allowed).
    """
    ports = {int(server.rpartition(":")[2]) for server in kafka["bootstrap_servers"]}
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        # Only rules that name the port count: a rule open to every port is the FTP data rule.
        for rule in (policy.get("spec") or {}).get("egress", []):
            for allowed in rule.get("ports") or []:
                low = allowed.get("port")
                if isinstance(low, int):
                    ports -= set(range(low, allowed.get("endPort", low) + 1))
        if ports:
            problems.append(
                f"{ident(policy)}: no egress rule allows the Kafka port(s) {sorted(ports)}"
                " of kafka.bootstrap_servers"
            )
    mounted: dict[str, tuple[str, set[str] | None]] = {}
    for mount in container.get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is not None and "subPath" not in mount:
            items = secret.get("items")
            mounted[mount["mountPath"]] = (
                secret["secretName"],
                {item["path"] for item in items} if items else None,
            )
    users = {d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaUser"}
    worker_users = []
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_oauth_token_file"):
        if not kafka.get(key):
            continue
        path = Path(kafka[key])
        secret, items = mounted.get(str(path.parent), (None, None))
        if secret is None:
            problems.append(f"kafka.{key} {path}: not in a directory mounted from a Secret")
        elif items is not None and path.name not in items:
            problems.append(f"kafka.{key} {path}: Secret {secret} is mounted without {path.name}")
        elif secret in users:
            worker_users.append(users[secret])
            if path.name not in STRIMZI_USER_KEYS:
                problems.append(f"kafka.{key} {path}: a KafkaUser's Secret has no {path.name}")
    topics = {
        (d.get("spec") or {}).get("topicName") or d["metadata"]["name"]
        for d in docs
        if d["kind"] == "KafkaTopic"
    }
    if topics:
        for key in ("input_topic", "result_topic", "fail_topic"):
            if kafka[key] not in topics:
                problems.append(f"kafka.{key} {kafka[key]} is not a KafkaTopic of the output")
    for user in {ident(u): u for u in worker_users}.values():
        needed = {
            ("topic", kafka["input_topic"], "Read"),
            ("group", kafka["consumer_group"], "Read"),
            ("topic", kafka["result_topic"], "Write"),
            ("topic", kafka["fail_topic"], "Write"),
            ("cluster", "", "IdempotentWrite"),
        }
        harmless = {(kind, name, "Describe") for kind, name, _ in needed if kind != "cluster"}
        granted = set()
        for acl in strimzi_acls(user, problems):
            resource = acl.get("resource") or {}
            if acl.get("type", "allow") != "allow" or resource.get("patternType", "literal") != (
                "literal"
            ):
                problems.append(f"{ident(user)}: only literal allow ACLs are expected here")
                continue
            for operation in acl.get("operations") or []:
                granted.add((resource.get("type"), resource.get("name", ""), operation))
        for kind, name, operation in sorted(needed - granted):
            problems.append(f"{ident(user)}: the worker needs {operation} on {kind} {name}".strip())
        for kind, name, operation in sorted(granted - needed - harmless):
            what = f"{kind} {name}".strip()
            problems.append(
                f"{ident(user)}: grants {operation} on {what}, which the worker does not need"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    split = sub.add_parser("split")
    split.add_argument("rendered")
    split.add_argument("outdir")
    split.add_argument("--external-secret", action="append", default=[])
    split.set_defaults(run=cmd_split)
    dash = sub.add_parser("dashboard")
    dash.add_argument("json")
    dash.add_argument("outdir")
    dash.set_defaults(run=cmd_dashboard)
    metrics = sub.add_parser("metrics")
    metrics.add_argument("files", nargs="+")
    metrics.set_defaults(run=cmd_metrics)
    placeholders = sub.add_parser("placeholders")
    placeholders.add_argument("rendered")
    placeholders.set_defaults(run=cmd_placeholders)
    config = sub.add_parser("config")
    config.add_argument("rendered")
    config.add_argument("--connections-from")
    config.set_defaults(run=cmd_config)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
