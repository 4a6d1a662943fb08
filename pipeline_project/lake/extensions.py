"""DuckDB extensions installed from the Python wheels in `requirements.lock`, never downloaded at run time.

The `duckdb-extension-ducklake`, `-postgres` and `-httpfs` wheels carry DuckDB's signed `.duckdb_extension`
files. `INSTALL '<file>'` copies one into DuckDB's extension directory, where `LOAD` and autoloading (dbt-duckdb's
`ATTACH 'ducklake:postgres:...'`) find it; the signature is still checked on load. The postgres extension's
file has to be installed as `postgres_scanner.duckdb_extension`, the name DuckDB loads it by.

`python -m pipeline_project.lake.extensions` installs them into the default extension directory (the image
build runs it); `ensure_installed` does the same from a connection, once per process and directory.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path

import duckdb

from pipeline_project.transform.warehouse import quote_literal

# Python package of the wheel -> the name DuckDB installs and loads the extension by.
WHEELS = {
    "duckdb_extension_ducklake": "ducklake",
    "duckdb_extension_postgres": "postgres_scanner",
    "duckdb_extension_httpfs": "httpfs",
}
_installed: set[str] = set()


class ExtensionMissing(RuntimeError):
    """An extension wheel of the production profile is not installed (pip install '.[production]')."""


def extension_file(package: str) -> Path:
    """The `.duckdb_extension` file a wheel ships for this DuckDB version."""
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise ExtensionMissing(
            f"{package} is not installed: the production profile needs the extension wheels in requirements.lock"
        ) from error
    root = Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    found = sorted(root.glob("*.duckdb_extension"))
    if not found:
        raise ExtensionMissing(f"{package} has no extension file for DuckDB {duckdb.__version__} under {root}")
    return found[0]


def ensure_installed(connection: duckdb.DuckDBPyConnection) -> None:
    """Install every extension of `WHEELS` that the connection's extension directory lacks, from its wheel."""
    directory = connection.execute("select current_setting('extension_directory')").fetchone()[0] or "~"
    if directory in _installed:
        return
    rows = connection.execute("select extension_name from duckdb_extensions() where installed").fetchall()
    installed = {name for (name,) in rows}
    for package, name in WHEELS.items():
        if name in installed:
            continue
        source = extension_file(package)
        with tempfile.TemporaryDirectory(prefix="duckdb-ext-") as scratch:
            named = Path(scratch) / f"{name}.duckdb_extension"
            shutil.copyfile(source, named)
            connection.execute(f"INSTALL {quote_literal(str(named))}")
    _installed.add(directory)


def main() -> None:
    connection = duckdb.connect()
    ensure_installed(connection)
    for name, path in connection.execute(
        "select extension_name, install_path from duckdb_extensions() where installed and install_path like '/%'"
    ).fetchall():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
