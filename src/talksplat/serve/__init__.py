"""``talksplat serve``: live avatars in a browser over WebRTC, driven by speech, text or a microphone
(docs/serve.md). ``make_app(avatars)`` builds the aiohttp application; ``serve.session.Session`` is
one viewer's stream."""
