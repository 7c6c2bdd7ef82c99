from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("campaigns/", views.campaign_list, name="campaign-list"),
    path("campaigns/new", views.campaign_create, name="campaign-create"),
    path("campaigns/join", views.campaign_join, name="campaign-join"),
    path("campaigns/<uuid:campaign_id>/", views.campaign_room, name="campaign-room"),
]
