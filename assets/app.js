// Live parts of the dashboard. Every page reads well without this script: it only
// refreshes a page's live part in place and follows a running build's log.
(() => {
  "use strict";
  const live = document.getElementById("live");
  const every = Number(live && live.dataset.refresh) || 0;

  // Fetches the page again (`live=1`: without what lies outside the live part, such as
  // a run's log) and swaps in its live part; no reload, no lost scroll. One fetch at a
  // time, so a slow answer never overwrites a newer one.
  let fetching = false;
  async function refresh() {
    if (!live || fetching) return;
    fetching = true;
    try {
      const url = new URL(location.href);
      url.searchParams.set("live", "1");
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok || response.redirected) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("live");
      if (fresh) {
        live.innerHTML = fresh.innerHTML;
        live.dataset.refresh = fresh.dataset.refresh;
      }
    } catch (_) {
      // The daemon may be restarting; the next tick tries again.
    } finally {
      fetching = false;
    }
  }

  if (every > 0) {
    const timer = setInterval(() => {
      if (Number(live.dataset.refresh) === 0) return clearInterval(timer);
      if (!document.hidden) refresh();
    }, every * 1000);
    // A tab that comes back into view catches up at once.
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && Number(live.dataset.refresh) > 0) refresh();
    });
  }

  // A run's log: lines after the last one the server rendered, as they are written.
  const log = document.getElementById("log");
  if (log && (log.dataset.state === "running" || log.dataset.state === "queued")) {
    const stick = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const source = new EventSource(`/runs/${log.dataset.run}/events?after=${log.dataset.after}`);
    log.dataset.streamed = "0";
    source.addEventListener("line", (event) => {
      const line = JSON.parse(event.data);
      if (line.seq <= Number(log.dataset.after)) return;
      const atBottom = stick();
      const span = document.createElement("span");
      span.className = "line";
      span.dataset.seq = line.seq;
      span.textContent = line.line + "\n";
      log.appendChild(span);
      log.dataset.after = line.seq;
      log.dataset.streamed = String(Number(log.dataset.streamed) + 1);
      if (atBottom) log.scrollTop = log.scrollHeight;
    });
    source.addEventListener("end", (event) => {
      source.close();
      log.dataset.state = JSON.parse(event.data).state;
      refresh();
    });
  }

})();
