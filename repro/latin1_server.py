"""A legacy server whose file names are Latin-1 bytes (no UTF8 in FEAT): `café.csv` is
b'caf\\xe9.csv' on the server. The task can only name it in Unicode; the client sends UTF-8."""
import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from harness import Case, dl, run  # noqa
name = b"/caf\xe9.csv".decode("utf-8", "surrogateescape")  # how the scripted server stores the Latin-1 bytes
c = Case("latin1-name", dict(files={name: b"x" * 100}, feat="211-Features:\n EPSV\n SIZE\n211 End"),
         [dl("/caf\u00e9.csv", "out/cafe.csv")])
run(c)
print("sent:", [x.encode("utf-8", "surrogateescape") for x in c._srv.commands if x.startswith("RETR")])
