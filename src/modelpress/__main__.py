"""`python -m modelpress ...`: the same CLI as the `modelpress` command."""

from modelpress.cli.main import main

raise SystemExit(main())
