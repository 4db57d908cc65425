from janus_bot.cli import main

raise SystemExit(main())
