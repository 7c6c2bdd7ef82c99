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
]
