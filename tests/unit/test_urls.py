"""Datastore URLs: passwords never shown, malformed URLs refused with the accepted forms."""

from __future__ import annotations

import pytest

from shoal.errors import ConfigError
from shoal.store import redact_url
from shoal.store.sqlite import path_from_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@h1:5432,h2:5432/db", "postgresql://u:***@h1:5432,h2:5432/db"),
        (
            "postgresql://u@h/db?password=s3cret&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("host=h1 password=s3cret dbname=db", "host=h1 password=*** dbname=db"),
        ("host=h1 password = 's3cret word' dbname=db", "host=h1 password = *** dbname=db"),
        ("host=h1 PASSWORD='it\\'s s3cret'", "host=h1 PASSWORD=***"),
        (
            "cannot connect to 'host=h password=s3cret': refused",
            "cannot connect to 'host=h password=***': refused",
        ),
        (
            "cannot open 'postgresql://u:s3cret@h/db?password=s3cret' now",
            "cannot open 'postgresql://u:***@h/db?password=***' now",
        ),
        ("sqlite:///shoal.db", "sqlite:///shoal.db"),
        ("sqlite:////var/lib/shoal.db", "sqlite:////var/lib/shoal.db"),
    ],
)
def test_redacted_url_hides_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


def test_sqlite_paths() -> None:
    assert path_from_url("sqlite:///shoal.db") == "shoal.db"
    assert path_from_url("sqlite:////abs/shoal.db") == "/abs/shoal.db"
    for bad in ("sqlite://host/x.db", "sqlite:///", "sqlite:///x.db?mode=ro"):
        with pytest.raises(ConfigError):
            path_from_url(bad)
