"""Remote paths with Windows separators: `..\\..\\windows\\win.ini` under base_path=/outgoing is
sent as `RETR /outgoing/..\\..\\windows\\win.ini` (IIS and other Windows servers read `\\` as
a separator: the path leaves base_path). Also shows M2: the password `secret` scrubbed
out of a file name."""
import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from harness import Case, dl, run  # noqa
c = Case("remote-backslash-dotdot", dict(files={"/outgoing/a.bin": b"x"}),
         [dl("..\\..\\windows\\win.ini", "out/w.ini", retry_count=0), dl("sub/..%2f..%2fsecret", "out/s", retry_count=0)],
         ini_extra="timeout = 3\nbase_path = /outgoing\n",
         expect={"dl ..\\..\\windows\\win.ini": ("failed", "PATH_NOT_ALLOWED", 0)})
run(c)
print("sent:", [x for x in c._srv.commands if x.startswith(("RETR", "SIZE"))])
