from typing import Any

from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        # Every logout through django.contrib.auth (the admin's included) closes the room
        # sockets of that session; the room's own logout page also does it once the
        # session is gone (accounts.views.LogoutView), closing the race with a socket
        # opening at that moment.
        user_logged_out.connect(_session_ended, dispatch_uid="realtime.session_ended")


def _session_ended(sender: Any, request: Any = None, **kwargs: Any) -> None:
    from .services import session_sockets_close

    session = getattr(request, "session", None)
    session_sockets_close(session_key=getattr(session, "session_key", None))
