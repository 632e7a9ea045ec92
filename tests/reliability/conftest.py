"""The service fixtures (a real export, servers on 127.0.0.1, certificates) serve the reliability
tests too."""

from ..service.conftest import export_dir, fresh_server, pki, server  # noqa: F401
