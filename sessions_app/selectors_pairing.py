"""Reads about paired devices (kept apart from selectors.py, which is about sessions)."""

from sessions_app.models import PairedDevice


def device_any_paired() -> bool:
    """Whether at least one device is paired and not revoked."""
    return PairedDevice.objects.filter(revoked_at__isnull=True).exists()
