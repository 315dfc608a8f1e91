// Loading a run's events into a LogModel: the tail first (the page opens at the end), live events over
// the run's WebSocket right after it, then older lines backfilled from seq 1 in pages behind them.
//
// Resuming: after any drop the socket reconnects (backoff with jitter, at most 5 s) with after_seq = the
// last seq shown, and drops any event at or below it, so no line is missing or shown twice.

import { api } from '../api.js';
import { ReconnectingSocket } from '../socket.js';

const TAIL = 5000; // lines fetched before anything else
const PAGE = 10000; // backfill page (the API's maximum)
const AROUND = 2000; // lines fetched around a #L target first

export class RunLogFeed {
  // handlers: events(events) after the model took new events, connection(word), end(), gone(reason),
  // unauthenticated(), backfilled()
  constructor(runId, model, handlers) {
    this.runId = runId;
    this.model = model;
    this.handlers = handlers;
    this.lastShown = 0; // the highest seq of the contiguous run of lines the live stream extends
    this.socket = null;
    this.stopped = false;
    this.ended = false;
  }

  async start(lastSeq, targetSeq = 0) {
    const tailFrom = Math.max(0, lastSeq - TAIL);
    const tail = await this.page(tailFrom, TAIL);
    this.lastShown = Math.max(tailFrom, tail.last_seq);
    this.handlers.events(tail.events);
    if (this.stopped) return;
    this.socket = new ReconnectingSocket(
      () => `/runs/${this.runId}/events/ws?after_seq=${this.lastShown}`,
      {
        message: (message) => this.onMessage(message),
        state: (word) => {
          if (word === 'closed') return;
          this.handlers.connection(word);
        },
        final: (code, reason) => this.onFinal(code, reason),
      },
    ).start();
    if (targetSeq > 0 && targetSeq <= tailFrom) {
      const around = Math.max(0, targetSeq - AROUND / 2);
      this.handlers.events((await this.page(around, AROUND)).events);
    }
    await this.backfill(tailFrom);
  }

  stop() {
    this.stopped = true;
    if (this.socket) this.socket.stop();
  }

  // One page of events; a network failure or a 5xx is retried with the socket's backoff (the server may
  // be restarting), anything else (401, 404) is for the caller.
  async page(afterSeq, limit) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await api('GET', `/runs/${this.runId}/events?after_seq=${afterSeq}&limit=${limit}`);
      } catch (error) {
        if (this.stopped || (error.status !== 0 && error.status < 500)) throw error;
        const ceiling = Math.min(5000, 250 * 2 ** attempt);
        await new Promise((resolve) => setTimeout(resolve, ceiling / 2 + Math.random() * (ceiling / 2)));
      }
    }
  }

  async backfill(upTo) {
    let after = 0;
    while (after < upTo && !this.stopped) {
      // Skip what is already held (the #L neighbourhood fetched first).
      while (after < upTo && this.model.loaded[after]) after += 1;
      if (after >= upTo) break;
      const page = await this.page(after, Math.min(PAGE, upTo - after));
      if (!page.events.length) break;
      this.handlers.events(page.events);
      after = page.last_seq;
    }
    if (!this.stopped) this.handlers.backfilled();
  }

  onMessage(message) {
    if (message.type === 'events') {
      const fresh = [];
      for (const event of message.events) {
        if (event.seq <= this.lastShown) continue; // already shown (a resumed stream never repeats a line)
        fresh.push(event);
        this.lastShown = event.seq;
      }
      if (fresh.length) this.handlers.events(fresh);
    } else if (message.type === 'end') {
      this.ended = true;
    }
  }

  onFinal(code, reason) {
    if (code === 1000) {
      this.ended = true;
      this.handlers.connection('ended');
      this.handlers.end();
    } else if (code === 4401) {
      this.handlers.unauthenticated();
    } else {
      this.handlers.connection('ended');
      this.handlers.gone(reason || `connection refused (${code})`);
    }
  }
}
