"""The service tests' fixtures are the root conftest's, their helpers tests.support's.

Modules that import these three from here (test_server, test_drain, test_model_repository,
tests/reliability/test_load) keep working; new code imports them from tests.support.servers.
"""

from tests.support.servers import ServerThread, free_port, server_config

__all__ = ["ServerThread", "free_port", "server_config"]
