"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, a fresh data directory in a temporary
folder, a free port on 127.0.0.1 and a socket directory of its own, so no service on the machine is assumed or
touched. `initdb` refuses to run as root, so as root the cluster runs as the `postgres` user. With a `password`,
connections over TCP must give it (scram-sha-256), as a production server would demand; `Cluster.psql` then
passes it through PGPASSWORD, never on a command line."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def server_binaries() -> Path | None:
    """The bin directory of the newest PostgreSQL server installed from Debian's packages, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Cluster:
    host: str
    port: int
    user: str
    bin_dir: Path
    password: str | None = None
    data_dir: Path | None = None

    def dsn(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql and return its unaligned, tuples-only output."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, **({"PGPASSWORD": self.password} if self.password else {})},
        )
        return result.stdout.strip()


@contextmanager
def throwaway_cluster(password: str | None = None, settings: tuple[str, ...] = ()) -> Iterator[Cluster]:
    """A started cluster, stopped and deleted on exit; `settings` are extra `-c name=value` server options."""
    bin_dir = server_binaries()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL server binaries are not installed (Debian package postgresql; .ci/run installs it)"
        )
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = _free_port()
    auth = ["-A", "trust"]
    if password is not None:
        password_file = root / "password"
        password_file.write_text(password + "\n")
        if as_root:
            shutil.chown(password_file, "postgres")
        # Local socket connections stay trusted (the test's own setup); TCP needs the password.
        auth = ["--auth-local", "trust", "--auth-host", "scram-sha-256", f"--pwfile={password_file}"]
    subprocess.run(
        [*run_as, str(bin_dir / "initdb"), "-D", str(data), *auth, "-U", "postgres"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    if password is not None:
        password_file.unlink()
    subprocess.run(
        [
            *run_as,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(root / "server.log"),
            "-o",
            " ".join([f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", *(f"-c {s}" for s in settings)]),
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield Cluster("127.0.0.1", port, "postgres", bin_dir, password, data)
    finally:
        subprocess.run(
            [*run_as, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)
