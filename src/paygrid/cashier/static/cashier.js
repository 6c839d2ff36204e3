// Follows the payment's status and reloads the page when it changes. No framework.
(function () {
  var root = document.getElementById("cashier");
  var initial = root.dataset.state;
  var url = root.dataset.statusUrl;
  var every = parseInt(root.dataset.pollMs, 10) || 1500;
  // Just chose a method paid on the channel's own page: go there (a link, not a form post).
  var onward = document.querySelector("a[data-go]");
  if (onward) { window.location.assign(onward.href); return; }
  function poll() {
    fetch(url, { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (body) {
        if (body.state && body.state !== initial) { window.location.reload(); return; }
        setTimeout(poll, every);
      })
      .catch(function () { setTimeout(poll, every * 2); });
  }
  setTimeout(poll, every);
})();
