// Sends the payer on to the channel's pay page: the form the channel asked us to post.
"use strict";
(function () {
  var form = document.querySelector("form[data-autosubmit]");
  if (form) {
    form.submit();
  }
})();
