<?php
// Roundcube for the labrunner sandbox (instance {{instance}}): the provider's web mail at
// https://mail.lab.test/, logging in to Dovecot over IMAP and sending through Postfix with
// the user's own login (SMTP AUTH), as a provider's web mail does inside its network.
$config = [];
$config['db_dsnw'] = 'sqlite:///{{srv}}/roundcube/db/roundcube.db?mode=0640';
$config['imap_host'] = 'imap.lab.test:143';
$config['smtp_host'] = 'smtp.lab.test:25';
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
$config['mail_domain'] = 'lab.test';
$config['temp_dir'] = '{{srv}}/roundcube/temp/';
$config['log_dir'] = '{{srv}}/roundcube/logs/';
$config['des_key'] = '{{des_key}}';
$config['product_name'] = 'Lab Mail';
$config['support_url'] = '';
$config['skin'] = 'elastic';
$config['plugins'] = [];
$config['enable_spellcheck'] = false;
$config['enable_installer'] = false;
$config['create_default_folders'] = true;
$config['use_https'] = true;
$config['login_autocomplete'] = 0;
