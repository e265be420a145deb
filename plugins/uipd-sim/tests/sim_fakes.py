"""Test helpers (not a conftest, so the name cannot clash with the daemon's tests): fixed times for
the pure model."""

from __future__ import annotations

from datetime import UTC, datetime

NIGHT = datetime(2025, 12, 9, 18, 0, tzinfo=UTC)  # 01:00 in Ho Chi Minh City
RUSH = datetime(2025, 12, 9, 1, 0, tzinfo=UTC)  # 08:00 in Ho Chi Minh City, a Tuesday
