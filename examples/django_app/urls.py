from __future__ import annotations

from django.urls import path

from examples.django_app.views import start_summary

urlpatterns = [path("api/summarize", start_summary)]
