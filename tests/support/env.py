"""Process environments: a valid server environment and the Procfile's dramatiq variables."""

from __future__ import annotations

GOOD_SECRET = "s" * 40


def server_env(**extra: str) -> dict[str, str]:
    return {"DATABASE_URL": "postgresql://u:p@db:5432/ec", "REDIS_URL": "redis://r:6379/0",
            "EC_TOKEN_SECRET": GOOD_SECRET, **extra}


def _procfile_env(pool: str, **env: str) -> dict[str, str]:
    """The variables the Procfile's ``pool`` command hands to dramatiq, expanded by bash."""
    import subprocess

    from tests.support.procs import procfile_command

    command = procfile_command(pool)
    assert command.startswith("env ")
    out = subprocess.run(["bash", "-c", "printf '%s\\n' " + command[len("env "):]],
                         env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("dramatiq_"))
