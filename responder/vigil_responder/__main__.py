"""python -m vigil_responder run --config responder.toml (the same as `vigil responder run`)."""
import sys

from vigil_responder.console.cli import main

sys.exit(main())
