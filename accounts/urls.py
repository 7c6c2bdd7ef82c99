from django.contrib.auth import views as auth_views
from django.urls import path

from rpgai.ratelimit import client_ip_key, rate_limit, username_key

from . import views

# The login form shares its counters with POST /api/auth/token: brute force is throttled
# whichever door it knocks on.
login_view = rate_limit("auth.login", key=client_ip_key, rate="login_ip")(
    rate_limit("auth.login.username", key=username_key, rate="login_username")(
        auth_views.LoginView.as_view(
            template_name="accounts/login.html", redirect_authenticated_user=True
        )
    )
)

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("login/", login_view, name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("account/", views.account, name="account"),
    path("account/delete/", views.account_delete, name="account-delete"),
    # Password reset by email (Django's views; the names are the ones they expect).
    path("password-reset/", views.password_reset, name="password_reset"),
    path("password-reset/sent/", views.password_reset_done, name="password_reset_done"),
    path(
        "password-reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("password-reset/done/", views.password_reset_complete, name="password_reset_complete"),
]
