"""pyftpdlib server with throttled data connections: python throttled_ftpd.py ROOT PORT BYTES_PER_SEC"""
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
from pyftpdlib.servers import FTPServer

root, port, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
auth = DummyAuthorizer()
auth.add_user("user", "secret", root, perm="elradfmwMT")
dtp = ThrottledDTPHandler
dtp.read_limit = rate
dtp.write_limit = rate
handler = FTPHandler
handler.authorizer = auth
handler.dtp_handler = dtp
handler.passive_ports = range(40000, 40100)
FTPServer(("127.0.0.1", port), handler).serve_forever()
