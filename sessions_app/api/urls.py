from django.urls import path

from sessions_app.api import views

urlpatterns = [
    path("channel-events/", views.ChannelEventView.as_view(), name="api-channel-events"),
]
