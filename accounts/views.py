from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_http_methods

from campaigns import members as campaign_members
from realtime import services as realtime_services
from rpgai.errors import DomainError
from rpgai.ratelimit import client_ip_key, rate_limit, user_key

from . import services
from .forms import EmailForm, PasswordConfirmForm, PasswordResetForm, SignupForm


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
    opened, on every process (CONTRACTS §7 "Origins and sessions")."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        session_key = request.session.session_key
        response = super().post(request, *args, **kwargs)
        # After the session is gone: a socket opening now finds it missing at its
        # re-check, one already open hears this.
        realtime_services.session_sockets_close(session_key=session_key)
        return response


# --- Password reset by email: Django's own views, in the site's look ------------------------


def email_key(group: str, request: Any) -> str:
    """The address a reset is asked for: one inbox is not flooded with links, whoever
    asks. Counted the same whether an account has it or not."""
    email = request.POST.get("email", "")
    return email.strip().lower()[:254] if isinstance(email, str) else ""


password_reset = rate_limit("auth.password_reset", key=client_ip_key, rate="password_reset_ip")(
    rate_limit("auth.password_reset.email", key=email_key, rate="password_reset_email")(
        auth_views.PasswordResetView.as_view(
            form_class=PasswordResetForm,
            template_name="accounts/password_reset_form.html",
            email_template_name="accounts/password_reset_email.txt",
            subject_template_name="accounts/password_reset_subject.txt",
            success_url=reverse_lazy("password_reset_done"),
        )
    )
)


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    """The same page whether the address has an account or not."""

    template_name = "accounts/password_reset_done.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["timeout_minutes"] = max(1, settings.PASSWORD_RESET_TIMEOUT // 60)
        return context


password_reset_done = PasswordResetDoneView.as_view()


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Django's: the link's token checked, a new password set. Then the account's API
    tokens stop working too (whoever held them may be why the password was reset)."""

    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("password_reset_complete")

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        services.password_reset_done(user=form.user)
        return response


password_reset_complete = auth_views.PasswordResetCompleteView.as_view(
    template_name="accounts/password_reset_complete.html"
)


# --- The account: email, deletion -------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
@rate_limit("auth.password_confirm", key=user_key, rate="login_username")
def account(request: HttpRequest) -> HttpResponse:
    """Your account: its name, and the email a reset link would go to."""
    user = request.user
    form = EmailForm(request.POST or None, user=user, initial={"email": user.email})
    if request.method == "POST" and form.is_valid():
        services.user_email_set(
            user=user, email=form.cleaned_data["email"], password=form.cleaned_data["password"]
        )
        messages.success(
            request,
            "Your email address is saved." if user.email else "Your email address is removed.",
        )
        return redirect("account")
    return render(request, "accounts/account.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
@rate_limit("auth.password_confirm", key=user_key, rate="login_username")
def account_delete(request: HttpRequest) -> HttpResponse:
    """Delete your account, after your password: what happens to each campaign is listed
    first (docs/security.md, "Deleting an account")."""
    user = request.user
    form = PasswordConfirmForm(request.POST or None, user=user)
    if request.method == "POST" and form.is_valid():
        session_key = request.session.session_key
        try:
            services.account_delete(
                user=user,
                password=form.cleaned_data["password"],
                session_key=session_key,
                request_id=getattr(request, "request_id", ""),
            )
        except DomainError as exc:
            form.add_error(None, exc.detail)
        else:
            logout(request)
            messages.success(
                request, "Your account is deleted. Thank you for playing, and farewell."
            )
            return redirect("login")
    plan = campaign_members.account_campaigns_plan(user_id=user.id)
    return render(
        request,
        "accounts/account_delete.html",
        {"form": form, "plan": plan, "anonymous_name": campaign_members.ANONYMOUS_NAME},
    )
