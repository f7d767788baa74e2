# A real PostgreSQL for the store tests: one throwaway cluster per session on a loopback port
# (vigil_tools.postgres), and a fresh database for each test, made from a template in tens
# of milliseconds.
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


@pytest.fixture(scope="session")
def pg_template(postgres):
    """A database holding the PostgreSQL store's schema, copied for each test."""
    import psycopg

    from vigil_gateway import store_pg

    postgres.create_database("vigil_template")
    with psycopg.connect(postgres.url("vigil_template")) as conn:
        store_pg.create_schema(conn)
    return "vigil_template"


@pytest.fixture
def pg_store_url(postgres, pg_template):
    """The URL of a fresh database with the store's schema, dropped after the test."""
    name = "t%d" % next(_names)
    url = postgres.create_database(name, template=pg_template)
    yield url
    postgres.drop_database(name)


@pytest.fixture
def pg_database(postgres):
    """The URL of an empty database of the session's server, dropped after the test."""
    name = "t%d" % next(_names)
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)
