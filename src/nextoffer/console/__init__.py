"""The console: the web application where marketers build offers, simulate decisions and
read results (issue 19), served at ``/console/`` by the API's app.

Server-rendered Jinja2 pages on Starlette with plain HTML forms (POST, then redirect to a
GET), WTForms for fields and CSRF tokens, a signed session cookie holding the API's own
credentials, and one small script for what needs it (live PQL checking, the profile test,
the sign-in link). Everything is reached through the :class:`~nextoffer.root.NextOffer`
root's use cases, never storage directly (an import-linter contract holds the line).
"""

from nextoffer.console.app import login_link, routes

__all__ = ["login_link", "routes"]
