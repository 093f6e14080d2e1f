"""The unauthenticated endpoints at the site root: pairing and health."""

from django.urls import path

from sessions_app import metrics, views

urlpatterns = [
    path("pair", views.pair, name="pair"),
    path("login", views.login, name="login"),
    path("health", views.health, name="health"),
    path("metrics", metrics.metrics, name="metrics"),
]
