// A WebSocket that reconnects after a dropped connection, with jittered exponential backoff capped at
// 5 s. The caller builds the URL for each attempt (a run's log resumes with after_seq = the last seq it
// shows). Close codes that no retry can fix end it: 1000 (done), 4400, 4401, 4403, 4404.

import { socketUrl } from './api.js';

const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 5000;
const FINAL_CODES = new Set([1000, 4400, 4401, 4403, 4404]);

export class ReconnectingSocket {
  // handlers: open(isReconnect), message(object), state('connecting'|'live'|'reconnecting'|'closed'),
  // final(code, reason) — once, when the socket closes for good.
  constructor(pathForAttempt, handlers) {
    this.pathForAttempt = pathForAttempt;
    this.handlers = handlers;
    this.attempt = 0;
    this.opened = false;
    this.stopped = false;
    this.socket = null;
    this.timer = null;
  }

  start() {
    this.handlers.state?.('connecting');
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, 'page closed');
  }

  connect() {
    if (this.stopped) return;
    const socket = new WebSocket(socketUrl(this.pathForAttempt()));
    this.socket = socket;
    socket.onopen = () => {
      if (this.stopped || socket !== this.socket) return;
      const isReconnect = this.opened;
      this.opened = true;
      this.handlers.state?.('live');
      this.handlers.open?.(isReconnect);
    };
    socket.onmessage = (event) => {
      if (this.stopped || socket !== this.socket) return;
      this.attempt = 0; // data flows again: the next drop starts the backoff afresh
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // not a frame of the protocol; the server never sends one
      }
      this.handlers.message(message);
    };
    socket.onclose = (event) => {
      if (this.stopped || socket !== this.socket) return;
      if (FINAL_CODES.has(event.code)) {
        this.stopped = true;
        this.handlers.state?.('closed');
        this.handlers.final?.(event.code, event.reason);
        return;
      }
      this.handlers.state?.('reconnecting');
      this.handlers.closed?.(event.code);
      const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.attempt);
      this.attempt += 1;
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }
}
