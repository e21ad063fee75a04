"""HTTP edge of bluegreen: forge intake, chat-ops, operator API, status pages, metrics."""
