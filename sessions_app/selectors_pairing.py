"""Reads about paired devices (kept apart from selectors.py, which is about sessions)."""

from sessions_app.models import PairedDevice


def device_any_paired() -> bool:
    """Whether at least one device is paired and not revoked."""
    return PairedDevice.objects.filter(revoked_at__isnull=True).exists()


def device_list(*, include_revoked: bool = False):
    """Paired devices, newest first."""
    devices = PairedDevice.objects.all()
    return devices if include_revoked else devices.filter(revoked_at__isnull=True)
