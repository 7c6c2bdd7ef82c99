from typing import Any

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from realtime import services as realtime_services
from rpgai.ratelimit import client_ip_key, rate_limit

from .forms import SignupForm


@require_http_methods(["GET", "POST"])
@rate_limit("auth.register", key=client_ip_key, rate="register_ip")
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("campaign-list")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("campaign-list")
    return render(request, "accounts/signup.html", {"form": form})


class LogoutView(auth_views.LogoutView):
    """Django's logout (POST only), which also closes the room sockets this session
    opened, on every server process (CONTRACTS §7 "Origins and sessions")."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        session_key = request.session.session_key
        response = super().post(request, *args, **kwargs)
        # After the session is gone: a socket opening now finds it missing at its
        # re-check, one already open hears this.
        realtime_services.session_sockets_close(session_key=session_key)
        return response
