"""Build the ModelPress images from this checkout (`make images`); the same as `modelpress images`, see its --help."""

import sys

from modelpress.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["images", *sys.argv[1:]]))
