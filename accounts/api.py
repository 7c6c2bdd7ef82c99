"""The auth API (CONTRACTS §4): register, token, token/refresh, logout; and the caller's
own account, `me` (read, change its email, delete it: docs/security.md)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.views import TokenObtainPairView

from rpgai.ratelimit import client_ip_key, rate_limit, user_key, username_key

from . import services

TokenPair = inline_serializer(
    "TokenPair", {"access": serializers.CharField(), "refresh": serializers.CharField()}
)


class PublicAuthApi(APIView):
    """Open to anyone; a bad token here is a 401 with a Bearer challenge."""

    authentication_classes = ()
    permission_classes = (AllowAny,)

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class RegisterApi(PublicAuthApi):
    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
        email = serializers.EmailField(max_length=254, required=False, allow_blank=True, default="")

    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        username = serializers.CharField()
        email = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    @rate_limit("auth.register", key=client_ip_key, rate="register_ip")
    def post(self, request: Request) -> Response:
        data = _valid(self.InputSerializer, request)
        user = services.user_register(
            username=data["username"], password=data["password"], email=data["email"]
        )
        return Response(
            {"id": str(user.id), "username": user.username, "email": user.email},
            status=status.HTTP_201_CREATED,
        )


class TokenObtainApi(TokenObtainPairView):
    """`username`, `password` → `access`, `refresh`. Throttled per client address and per
    username (the same counters as the login page)."""

    @rate_limit("auth.login", key=client_ip_key, rate="login_ip")
    @rate_limit("auth.login.username", key=username_key, rate="login_username")
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
        return super().post(request, *args, **kwargs)


class TokenRefreshApi(PublicAuthApi):
    class InputSerializer(serializers.Serializer):
        refresh = serializers.CharField(max_length=4096)

    @extend_schema(request=InputSerializer, responses={200: TokenPair})
    @rate_limit("auth.refresh", key=client_ip_key, rate="refresh_ip")
    def post(self, request: Request) -> Response:
        data = _valid(self.InputSerializer, request)
        try:
            pair = services.token_refresh(refresh=data["refresh"])
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        return Response(pair)


class LogoutApi(APIView):
    class InputSerializer(serializers.Serializer):
        refresh = serializers.CharField(max_length=4096)

    @extend_schema(request=InputSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        data = _valid(self.InputSerializer, request)
        try:
            services.token_blacklist(refresh=data["refresh"], user_id=request.user.id)
        except TokenError as exc:
            raise serializers.ValidationError(
                {"refresh": [f"not a valid refresh token: {exc.args[0]}"]}
            ) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    """The caller's account. Changing its email or deleting it asks for its password
    (a stolen access token is not enough); both count against the login limit per user."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        username = serializers.CharField()
        email = serializers.CharField(help_text="where password reset links go; may be empty")

    class PatchInputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254, allow_blank=True, help_text="empty: none")
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    class DeleteInputSerializer(serializers.Serializer):
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    @extend_schema(responses={200: OutputSerializer}, operation_id="auth_me_retrieve")
    def get(self, request: Request) -> Response:
        return Response(_me(request.user))

    @extend_schema(
        request=PatchInputSerializer,
        responses={200: OutputSerializer},
        operation_id="auth_me_partial_update",
    )
    @rate_limit("auth.password_confirm", key=user_key, rate="login_username", methods=("PATCH",))
    def patch(self, request: Request) -> Response:
        data = _valid(self.PatchInputSerializer, request)
        user = services.user_email_set(
            user=request.user, email=data["email"], password=data["password"]
        )
        return Response(_me(user))

    @extend_schema(
        request=DeleteInputSerializer, responses={204: None}, operation_id="auth_me_destroy"
    )
    @rate_limit("auth.password_confirm", key=user_key, rate="login_username", methods=("DELETE",))
    def delete(self, request: Request) -> Response:
        data = _valid(self.DeleteInputSerializer, request)
        session = getattr(request._request, "session", None)
        services.account_delete(
            user=request.user,
            password=data["password"],
            session_key=getattr(session, "session_key", None),
            request_id=getattr(request, "request_id", ""),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


def _me(user: Any) -> dict[str, Any]:
    return {"id": str(user.id), "username": user.get_username(), "email": user.email}


def _valid(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
