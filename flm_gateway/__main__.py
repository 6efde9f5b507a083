from flm_gateway.cli import main

raise SystemExit(main())
