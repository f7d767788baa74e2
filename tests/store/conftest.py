# A real PostgreSQL for the store tests: one throwaway cluster per session on a loopback port
# (vigil_tools.postgres), and a database of its own for each test.
import itertools

import pytest

_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres():
    from vigil_tools.postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()
    server.remove()


@pytest.fixture
def pg_database(postgres):
    """The URL of an empty database of the session's server, dropped after the test."""
    name = "t%d" % next(_names)
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)
