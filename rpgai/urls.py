from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from rpgai.gm_site import gm_site_load

urlpatterns = [
    path("admin/", admin.site.urls),
    # GMs manage their own campaigns (CONTRACTS §7 "GM admin"; rpgai/gm_site.py).
    path("gm/", gm_site_load().urls),
    path("", include("rpgai.ops_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/auth/", include("accounts.api_urls")),
    path("api/", include("campaigns.api_urls")),
    path("api/", include("voice.urls")),
    path("api/", include("campaigns.gm_api_urls")),
    path("api/", include("campaigns.fork_api_urls")),
    path("api/", include("memory.urls")),
    path("api/", include("billing.api_urls")),
    path("", include("accounts.urls")),
    path("", include("campaigns.urls")),
    path("", include("campaigns.tool_urls")),
]
handler404 = "rpgai.errors.not_found"
