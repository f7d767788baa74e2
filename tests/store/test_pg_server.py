# The session's PostgreSQL itself: a real server on loopback that each test gets a database of.
import psycopg


def test_a_test_gets_a_database_it_can_create_and_query(pg_database):
    with psycopg.connect(pg_database) as conn:
        conn.execute("CREATE TABLE t (id integer PRIMARY KEY, word text NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        conn.commit()
    with psycopg.connect(pg_database) as conn:  # committed: another connection sees it
        rows = conn.execute("SELECT id, word FROM t ORDER BY id").fetchall()
        version = conn.execute("SHOW server_version_num").fetchone()[0]
    assert rows == [(1, "one"), (2, "two")]
    assert int(version) >= 150000


def test_each_test_has_a_database_of_its_own(pg_database, postgres):
    with psycopg.connect(pg_database) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                              ).fetchone()[0]
        name = conn.execute("SELECT current_database()").fetchone()[0]
    assert tables == 0  # nothing of the test before
    assert pg_database == postgres.url(name)


def test_the_server_listens_on_loopback_only(postgres):
    with postgres.connect() as conn:
        listen = conn.execute("SHOW listen_addresses").fetchone()[0]
    assert listen == "127.0.0.1"
