from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from campaigns import members as campaign_members

from . import services
from .models import User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Django's user admin, whose deletion is the account deletion of
    docs/security.md: the user leaves their campaigns under an anonymous name first. The
    only GM of a campaign with other members is listed as protected (not deleted) until
    the GM role is handed over."""

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for user in objs:
            blocked = campaign_members.account_campaigns_plan(user_id=user.pk).blocked
            protected = list(protected) + [
                f"{user}: the only GM of “{campaign.name}”, where others play"
                for campaign in blocked
            ]
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        services.account_remove(user_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            services.account_remove(user_id=user.pk)
