"""Chat-ops: the endpoints Slack and Mattermost call when people click buttons or type /deploy.

`slack` (signed by Slack) and `mattermost` (signed button contexts) verify and parse
their platform's requests; `actions` authorises them and queues the command through
the engine; `responder` answers Slack's `response_url` in the background; `status`
writes `/deploy status`. Posting and updating the release messages themselves is the
worker's job (`worker.notify`), rendering them is `worker.chatmessages`.
`BLUEPRINTS` is what `webhook.app` registers.
"""

from __future__ import annotations

from webhook.chatops import mattermost, slack

BLUEPRINTS = (slack.bp, mattermost.bp)
