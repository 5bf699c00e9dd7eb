// AudioWorklet: posts the RMS level of the input about every 50 ms.
class MicLevelProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.sum = 0;
    this.count = 0;
    this.every = Math.round(sampleRate * 0.05);
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (let i = 0; i < channel.length; i++) this.sum += channel[i] * channel[i];
      this.count += channel.length;
    }
    if (this.count >= this.every) {
      this.port.postMessage({ rms: Math.sqrt(this.sum / this.count) });
      this.sum = 0;
      this.count = 0;
    }
    return true;
  }
}

registerProcessor("mic-level", MicLevelProcessor);
