import sys

from .process import early

early.install(sys.argv)  # before the slow imports: a SIGTERM from here on is kept

from .cli import main  # noqa: E402

sys.exit(main())
