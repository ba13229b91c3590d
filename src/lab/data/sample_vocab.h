// The embedded sample's own vocabulary: attribute keys and values per product type, and ad-copy
// phrase templates ("{v}" = an attribute value, "{item}" = the product word). Written for glmlab;
// nothing here is taken from the AdvertiseGen files.
#pragma once
#include <string_view>
#include <vector>

namespace glmlab::lab::sample_vocab {

struct Attribute {
  std::string_view key;
  std::vector<std::string_view> values;
  int weight;  // how often the key is drawn, relative to the other keys of the type
};

struct ProductType {
  std::string_view name;                  // value of 类型
  std::string_view item_key;              // key whose value names the item ("" for none)
  std::vector<std::string_view> items;    // product words when the record has no item_key value
  std::vector<Attribute> attributes;      // type-specific keys, after the shared ones
  int weight;                             // how often the type is drawn
};

inline const std::vector<Attribute>& shared_attributes() {
  static const std::vector<Attribute> a = {
      {"材质", {"棉", "针织", "牛仔布", "雪纺", "蕾丝", "羊毛", "真丝", "亚麻", "网纱", "天丝", "羊绒", "灯芯绒", "冰丝", "棉麻"}, 9},
      {"颜色", {"白色", "黑色", "红色", "粉色", "蓝色", "卡其色", "军绿色", "灰色", "杏色", "酒红色", "纯色", "米白色", "藏青色"}, 8},
      {"风格", {"简约", "清新", "复古", "文艺", "休闲", "通勤", "街头", "甜美", "性感", "淑女", "英伦", "优雅", "百搭", "学院", "嘻哈", "运动", "知性"}, 22},
      {"图案", {"纯色", "条纹", "格子", "印花", "刺绣", "碎花", "波点", "字母", "线条", "撞色", "卡通", "拼色", "几何", "植物", "豹纹"}, 23},
      {"版型", {"宽松", "修身", "显瘦", "h", "a字", "直筒", "收腰"}, 9},
  };
  return a;
}

inline const std::vector<ProductType>& product_types() {
  static const std::vector<ProductType> t = {
      {"裙", "裙长", {"连衣裙", "半身裙", "裙子"},
       {{"裙长", {"短裙", "中长裙", "长裙", "连衣裙", "半身裙"}, 6},
        {"裙型", {"a字裙", "百褶裙", "包臀裙", "鱼尾裙", "蛋糕裙", "背带裙", "衬衫裙", "一步裙"}, 4},
        {"裙款式", {"拼接", "腰带", "荷叶边", "系带", "木耳边", "纽扣", "口袋", "不规则", "抽褶", "开衩"}, 9},
        {"裙领型", {"v领", "圆领", "方领", "一字领", "翻领", "半高领", "娃娃领"}, 3},
        {"裙下摆", {"荷叶边", "开叉", "不规则", "花边", "压褶"}, 3},
        {"裙袖型", {"泡泡袖", "喇叭袖", "灯笼袖", "飞飞袖"}, 1},
        {"裙腰型", {"高腰", "松紧腰", "中腰"}, 2}},
       46},
      {"上衣", "衣样式", {"上衣", "外套", "衬衫"},
       {{"衣样式", {"衬衫", "t恤", "卫衣", "外套", "毛衣", "针织衫", "风衣", "雪纺衫", "西装", "夹克", "马甲", "开衫"}, 9},
        {"衣款式", {"口袋", "拼接", "纽扣", "破洞", "连帽", "抽绳", "系带", "露肩", "荷叶边", "罗纹", "拉链"}, 7},
        {"衣领型", {"圆领", "v领", "翻领", "立领", "西装领", "高领", "娃娃领", "polo领"}, 4},
        {"衣袖型", {"落肩袖", "泡泡袖", "灯笼袖", "蝙蝠袖", "喇叭袖"}, 2},
        {"衣长", {"短款", "中长款", "常规款"}, 1},
        {"衣袖长", {"长袖", "短袖", "七分袖", "无袖"}, 1},
        {"衣门襟", {"单排扣", "双排扣", "拉链", "套头"}, 2}},
       37},
      {"裤", "裤型", {"裤子", "长裤", "休闲裤"},
       {{"裤长", {"九分裤", "七分裤", "短裤", "长裤"}, 4},
        {"裤型", {"阔腿裤", "直筒裤", "哈伦裤", "小脚裤", "灯笼裤", "工装裤", "铅笔裤", "背带裤"}, 4},
        {"裤款式", {"口袋", "拉链", "纽扣", "破洞", "抽绳", "毛边", "不规则", "侧条纹"}, 6},
        {"裤腰型", {"高腰", "松紧腰", "中腰"}, 3},
        {"裤口", {"微喇裤口", "卷边", "开叉", "小脚", "毛边"}, 3}},
       17},
  };
  return t;
}

// Clauses about one attribute key; a key not listed uses detail_clauses().
struct KeyClauses {
  std::string_view key;
  std::vector<std::string_view> clauses;
};
inline const std::vector<KeyClauses>& key_clauses() {
  static const std::vector<KeyClauses> k = {
      {"材质", {"选用{v}面料，柔软亲肤", "{v}材质手感细腻，穿着舒适透气", "精选优质{v}，垂感自然", "{v}质地轻盈有型"}},
      {"颜色", {"{v}的色调干净耐看", "经典的{v}百搭又显白", "{v}配色低调而有质感", "温柔的{v}很衬肤色"}},
      {"风格", {"整体散发出{v}的气息", "演绎{v}的时尚态度", "透出浓浓的{v}味道", "{v}范儿十足"}},
      {"图案", {"{v}图案的点缀增添几分趣味", "衣身的{v}元素打破了单调", "精致的{v}装饰丰富了层次感", "{v}设计吸睛又别致"}},
      {"版型", {"{v}的版型很好地修饰了身形", "{v}剪裁上身利落", "采用{v}版型，包容性很强"}},
      {"衣样式", {"{v}的款式经典又耐看", "作为一件{v}，实穿性很强", "{v}是衣橱里的常青款"}},
      {"裙长", {"{v}的长度恰到好处", "{v}的设计灵动飘逸"}},
      {"裙型", {"{v}的廓形优雅大方", "{v}的裙摆随步伐轻轻摇曳"}},
      {"裤型", {"{v}的裤型遮肉又显腿长", "{v}的剪裁利落有型"}},
      {"裤长", {"{v}的长度露出脚踝更显瘦", "{v}的设计清爽干练"}},
  };
  return k;
}

inline const std::vector<std::string_view>& detail_clauses() {
  static const std::vector<std::string_view> d = {
      "独特的{v}设计精致又有心机", "{v}的细节处理十分用心", "加入{v}设计，凸显个性", "{v}的巧妙运用让造型更灵动",
      "别致的{v}设计增添了看点"};
  return d;
}

inline const std::vector<std::string_view>& openings() {
  static const std::vector<std::string_view> o = {
      "这款{item}", "这件{item}", "今年流行的{item}", "一款充满设计感的{item}", "BRAND推出的这款{item}",
      "看似简单的{item}", "人手必备的{item}"};
  return o;
}

inline const std::vector<std::string_view>& fillers() {
  static const std::vector<std::string_view> f = {
      "轻松穿出好气质", "无论日常出街还是约会都很合适", "上身效果十分出彩", "展现女性的温柔魅力",
      "让你在人群中脱颖而出", "穿着舒适无束缚感", "百搭又实用", "尽显干练利落的一面", "彰显青春活力",
      "搭配小白鞋就很好看", "春夏季节穿着刚刚好", "随性又不失精致", "视觉上拉长了身材比例", "细节之处见品质",
      "简单搭配也能很出众", "带来满满的高级感", "给人留下深刻的印象", "怎么穿都不会出错", "很适合小个子女生",
      "面料挺括不易起皱", "兼具实用性与美观性", "<UNK>的设计也很贴心"};
  return f;
}

}  // namespace glmlab::lab::sample_vocab
