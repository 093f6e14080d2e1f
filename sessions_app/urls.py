"""The unauthenticated endpoints at the site root: pairing, health and readiness."""

from django.urls import path

from sessions_app import metrics, views

urlpatterns = [
    path("pair", views.pair, name="pair"),
    path("login", views.login, name="login"),
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
    path("metrics", metrics.metrics, name="metrics"),
]
