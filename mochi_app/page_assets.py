"""The page's stylesheet, and the scripts behind its sign-in and sign-out buttons."""

# The key goes to POST /session, which keeps it in an HttpOnly cookie; the page's scripts never store it.
SIGN_IN_JS = """async (key) => {
  const response = await fetch("session", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify({api_key: key})});
  if (response.ok) { window.location.reload(); return ""; }
  return "**" + (await response.json()).detail + "**";
}"""
SIGN_OUT_JS = """async () => { await fetch("session", {method: "DELETE"}); window.location.reload(); }"""

CSS = """
.banner { padding: 8px 12px; border-radius: 8px; background: var(--block-background-fill); }
.banner.warn { background: #fff4e5; color: #7a4100; }
.banner.error { background: #fee2e2; color: #991b1b; }
.banner.starting { display: flex; flex-direction: column; gap: 4px; background: #eff6ff; color: #1e3a8a; }
.banner progress { width: 100%; height: 10px; }
.job-card { display: flex; flex-direction: column; gap: 6px; padding: 12px; border-radius: 8px;
  border: 1px solid var(--border-color-primary); min-height: 72px; }
.job-card.empty { color: var(--body-text-color-subdued); justify-content: center; }
.job-card progress { width: 100%; height: 12px; }
.badge { font-size: 12px; font-weight: 600; padding: 2px 8px; border-radius: 999px; background: #e5e7eb; color: #111; }
.badge.pending { background: #e0e7ff; color: #3730a3; } .badge.running { background: #dbeafe; color: #1e40af; }
.badge.completed { background: #dcfce7; color: #166534; } .badge.failed { background: #fee2e2; color: #991b1b; }
.badge.cancelled { background: #f3f4f6; color: #4b5563; }
.meta { font-size: 13px; color: var(--body-text-color-subdued); } .error { color: #b91c1c; }
.player { width: 100%; max-height: 60vh; border-radius: 8px; background: #000; }
.download { display: inline-block; margin-top: 6px; }
.gallery-grid { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px; }
.video-tile, .sheet-tile { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
.tile-buttons { flex-wrap: nowrap !important; gap: 6px; } .tile-buttons button { min-width: 0 !important; }
.job-card img.preview { width: 100%; max-width: 424px; aspect-ratio: 16 / 9; object-fit: contain; border-radius: 6px;
  background: #111; }
.thumb { width: 100%; aspect-ratio: 16 / 9; border-radius: 6px; background: #111; object-fit: contain; }
.thumb.placeholder { display: flex; flex-direction: column; gap: 8px; align-items: center; justify-content: center;
  padding: 0 12px; text-align: center; background: #f3f4f6; color: #374151; font-size: 13px; }
.thumb.placeholder progress { width: 80%; height: 8px; }
@media (max-width: 640px) { .gallery-grid { grid-template-columns: 1fr; } }
.caption .prompt { font-weight: 500; margin: 4px 0; }
.thumb.live { position: relative; overflow: hidden; }
.thumb.live img { width: 100%; height: 100%; object-fit: contain; }
.thumb.live .live-state { position: absolute; left: 0; right: 0; bottom: 0; display: flex; flex-direction: column;
  gap: 4px; padding: 4px 8px; background: rgba(0, 0, 0, 0.65); font-size: 12px; }
.thumb.live .live-state span { color: #fff !important; }
.invalid { box-shadow: inset 0 0 0 2px #dc2626 !important; } .invalid [data-testid="block-info"] { color: #b91c1c; }
"""
