from django.urls import path

from . import api

urlpatterns = [
    path("register", api.RegisterApi.as_view(), name="api-register"),
    path("token", api.TokenObtainApi.as_view(), name="api-token"),
    path("token/refresh", api.TokenRefreshApi.as_view(), name="api-token-refresh"),
    path("logout", api.LogoutApi.as_view(), name="api-logout"),
    path("me", api.MeApi.as_view(), name="api-me"),
]
