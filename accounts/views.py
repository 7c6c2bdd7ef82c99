from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

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
