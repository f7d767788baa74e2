// The console's only script: live updates over server-sent events, the new-alarm cue (a
// banner, the title, and a tone once sound is on), and the ages ticking. The pages work
// without it; it adds no control of its own.
//
// Sound: browsers let a page play audio only after the user has clicked (or pressed a key)
// on the site; a click before a same-origin navigation counts, so signing in turns sound on
// for the pages that follow. Until then the audio context stays suspended, the button says
// so, and any click on the page turns it on.
(function () {
  "use strict";
  var body = document.body;
  var page = body.dataset.page;
  var audio = null;
  var soundButton = document.getElementById("sound");

  // A refused step's page is the answer to its form's POST: the address becomes the
  // incident's, so that reloading shows the incident again instead of sending the step again.
  if (page === "incident" && location.pathname !== "/incidents/" + body.dataset.incident)
    history.replaceState(null, "", "/incidents/" + body.dataset.incident);

  function refresh(url, id) {
    return fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (r.status === 401 || r.redirected) { location.href = "/login"; return; }
      return r.text().then(function (html) {
        var el = document.getElementById(id);
        if (el) { el.innerHTML = html; ages(); }
      });
    });
  }

  function reload(incident) {
    if (page === "queue") refresh("/queue", "queue");
    if (page === "incident" && (incident === undefined || incident === body.dataset.incident))
      refresh("/incidents/" + body.dataset.incident + "/panel", "panel");
  }

  function cue(incident) {
    var box = document.getElementById("cue");
    if (!box) return;
    document.getElementById("cue-link").href = "/incidents/" + incident;
    box.hidden = false;
    box.classList.add("flash");
    document.title = "NEW ALARM · Vigil console";
    if (audio && audio.state === "running") {
      var osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = 880; gain.gain.value = 0.2;
      osc.connect(gain); gain.connect(audio.destination);
      osc.start(); osc.stop(audio.currentTime + 0.6);
    }
  }

  function ages() {
    var now = Date.now() / 1000;
    document.querySelectorAll(".age[data-since]").forEach(function (el) {
      var s = Math.max(0, Math.round(now - parseFloat(el.dataset.since)));
      var text = s < 120 ? s + " s" : s < 7200 ? Math.floor(s / 60) + " min" : Math.floor(s / 3600) + " h";
      el.textContent = "age " + text;
    });
  }

  function showSound() {
    var on = audio && audio.state === "running";
    soundButton.textContent = on ? "Sound on" : "Sound off: click to turn on";
    soundButton.className = on ? "sound on" : "sound off";
  }
  if (soundButton && (window.AudioContext || window.webkitAudioContext)) {
    audio = new (window.AudioContext || window.webkitAudioContext)();
    audio.onstatechange = showSound;
    showSound();
    // any click is the gesture the browser waits for
    document.addEventListener("click", function () { audio.resume(); }, true);
  }
  var seen = document.getElementById("cue-seen");
  if (seen) seen.addEventListener("click", function () {
    document.getElementById("cue").hidden = true;
    document.title = "Vigil console";
  });

  if (page) {
    var live = document.getElementById("live");
    var first = true;
    var source = new EventSource("/events");
    source.addEventListener("hello", function () {
      live.textContent = "live"; live.className = "live up";
      if (!first) reload();  // reconnected: what changed meanwhile
      first = false;
    });
    source.addEventListener("incident", function (e) { reload(e.data); });
    source.addEventListener("alarm", function (e) { reload(e.data); cue(e.data); });
    source.onerror = function () {
      live.textContent = "reconnecting…"; live.className = "live down";
      // the stream refused (401) once the session has ended: sign in again
      fetch("/queue", {redirect: "manual", cache: "no-store"}).then(function (r) {
        if (r.type === "opaqueredirect") { source.close(); location.href = "/login"; }
      }).catch(function () {});  // the console is down: EventSource keeps trying
    };
  }
  ages();
  setInterval(ages, 1000);
})();
