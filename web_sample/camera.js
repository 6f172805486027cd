// Camera mode: classify getUserMedia frames at a chosen rate, smooth the scores with the
// live rule (live-rule.js, docs/live-rule.md) and blur the video while its state is on.
// One frame is classified at a time: a tick that finds inference still busy drops its
// frame, so no queue grows when the model is slower than the chosen rate. Everything
// shown is text (textContent).
import { LiveRule } from "./live-rule.js";

const FPS_WINDOW_S = 3; // achieved frames per second over the last few seconds

export class CameraMode {
  constructor({ classifier, video, show, threshold }) {
    this.classifier = classifier;
    this.video = video;
    this.show = show; // called with each update (see update() below)
    this.threshold = threshold;
    this.log = []; // {t, score, smoothed, state}, one per classified frame
    this.dropped = 0;
    this.stream = null;
  }

  async start(rate) {
    this.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    this.video.srcObject = this.stream;
    await this.video.play();
    // a feed that stalls for over a second (a hidden tab, a busy machine) starts over
    this.rule = new LiveRule({ on: this.threshold(), maxGapS: 1 });
    this.busy = false;
    this.setRate(rate);
  }

  setRate(rate) {
    clearInterval(this.timer);
    if (this.stream) this.timer = setInterval(() => this.tick(), 1000 / rate);
  }

  // The threshold moved: the rule starts over with it.
  retune() {
    if (this.rule) this.rule = new LiveRule({ on: this.threshold(), maxGapS: 1 });
  }

  stop() {
    clearInterval(this.timer);
    this.timer = undefined;
    for (const track of this.stream?.getTracks() || []) track.stop();
    this.stream = null;
    this.video.srcObject = null;
    this.video.classList.remove("blur");
  }

  async tick() {
    if (this.busy) {
      this.dropped += 1;
      return;
    }
    if (this.video.readyState < 2) return; // no frame yet
    this.busy = true;
    try {
      const t = performance.now() / 1000; // the frame's capture time
      const frame = await createImageBitmap(this.video);
      let result;
      try {
        result = await this.classifier.classify(frame);
      } finally {
        frame.close();
      }
      if (!this.stream) return; // stopped meanwhile
      const live = this.rule.update(t, result.nsfwScore);
      this.log.push({ t, score: result.nsfwScore, smoothed: live.smoothed, state: live.state });
      const recent = this.log.filter((entry) => entry.t > t - FPS_WINDOW_S);
      const span = recent.length > 1 ? recent[recent.length - 1].t - recent[0].t : 0;
      const fps = span > 0 ? (recent.length - 1) / span : 0;
      this.video.classList.toggle("blur", live.state === "on");
      this.show({ ...live, score: result.nsfwScore, label: result.label, fps, dropped: this.dropped, classified: this.log.length });
    } finally {
      this.busy = false;
    }
  }
}
