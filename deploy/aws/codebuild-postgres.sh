#!/bin/sh
# PostgreSQL for the test suite in a CodeBuild container (Ubuntu's package): trust
# authentication on 127.0.0.1 for user postgres, and the database `test`, as on the
# machines the suite is developed on. The container is thrown away after the build.
set -eu
hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n 1)
sed -i -E 's/^(local[[:space:]]+all[[:space:]]+postgres[[:space:]]+).*/\1trust/;
           s/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1\/32[[:space:]]+).*/\1trust/' "$hba"
service postgresql start
until pg_isready -h 127.0.0.1 -q; do sleep 1; done
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test"
