-- :n (int) = 5
-- :word (text) = 'gristmill'
create table t (i integer, word text);
insert into t
  with recursive c(i) as (select 1 union all select i + 1 from c where i < :n)
  select i, :word || '-' || i from c;
select i, word from t order by i desc limit 3;
