"""`python -m native_host` starts the native-messaging host, exactly like `autocrypt-sma-host`."""

from native_host.host import main

raise SystemExit(main())
