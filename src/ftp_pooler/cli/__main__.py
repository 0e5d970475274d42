"""``python -m ftp_pooler.cli``: the same as the ``ftp-pooler`` command."""

from ftp_pooler.cli.main import main

raise SystemExit(main())
