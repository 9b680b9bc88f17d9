"""The API's page, /docs (Swagger UI), with its scripts served from this server, so that it works offline."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
# FastAPI's page loads these from a CDN by default; the fastapi-offline wheel ships copies (Swagger UI 5,
# which reads OpenAPI 3.1 as FastAPI writes it). No /redoc: ReDoc fetches its logo from its own CDN.
ASSETS = files("fastapi_offline") / "static"


def add_api_docs(app: FastAPI) -> None:
    """FastAPI's documented self-hosting of its docs' assets; the app must be made with docs_url=None."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(ASSETS)), name="docs-assets")

    def url(request: Request, path: str) -> str:
        return f"{request.scope.get('root_path', '')}{path}"  # behind a proxy's prefix too

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=url(request, app.openapi_url or "/openapi.json"),
            title=f"{app.title}: REST API",
            swagger_js_url=url(request, f"{ASSETS_PATH}/swagger-ui-bundle.js"),
            swagger_css_url=url(request, f"{ASSETS_PATH}/swagger-ui.css"),
            swagger_favicon_url=url(request, f"{ASSETS_PATH}/favicon.png"),
        )
